"""The FAQ matcher: normalisation, jieba segmentation, synonyms, and a confidence that one threshold fits.

Pure and synchronous (no database, no event loop), so it can be tested and benchmarked on its own.

How a text becomes features: NFKC (full-width to half-width), lower case, emoji and punctuation dropped;
jieba's precise mode cuts it into words; synonyms map each word to its group's first word; filler and stop
words (请问, 那个, 呀, 吗 …) are dropped. Each kept word is a feature of weight 1; a longer word also
yields the dictionary words inside it (0.8), its other character bigrams (0.5) and its characters (0.2) in
the same feature space, so "开发票" still meets "发票怎么开", and a typo ("退贷") or a segmentation slip
keeps partial credit through its characters.

How an entry is scored: BM25 over the union of an entry's question and aliases picks candidates from an
inverted index (characters only refine, they never nominate, which keeps long posting lists out of the hot
path). Each candidate's confidence is then taken on its best variant (the question or one alias, so an
alias that matches counts in full): the IDF-weighted share of the query the variant explains, times the
share of the variant the query covers, as a weighted geometric mean. Query words no entry knows count
against the first share, so ordinary chat that merely mentions "发货" stays below the threshold, and the
score means the same for short and long messages: 1.0 is an exact match, 0 nothing in common.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import jieba

# Weights of a feature by where it came from (a feature's weight is the largest of its sources).
WORD, SUBWORD, BIGRAM, CHAR = 1.0, 0.8, 0.5, 0.2
# How much the query's side weighs in the confidence (the variant's side gets the rest).
QUERY_SIDE = 0.4
# A one-word message that asks nothing names a topic ("积分", "谢谢客服"): unless it is exactly an entry's
# question or alias, its confidence is scaled down so that it lands in the suggestion band at most.
ONE_WORD = 0.75
# A feature nominates candidates only if at most 1/NOMINATE_SHARE of the entries (and at least
# NOMINATE_MIN) have it.
NOMINATE_SHARE, NOMINATE_MIN = 25, 200
# A message this short (letters and characters) is a bare topic that may get suggestions.
TOPIC_CHARS = 4
# Longest alias or question taught to the tokenizer as one word.
MAX_TERM = 4
# Candidates re-scored per query (by their BM25 retrieval score).
CANDIDATES = 24
BM25_K1, BM25_B = 1.2, 0.75

# Language-level equivalences (question words); domain synonyms come from the config (faq.synonyms).
BUILTIN_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("怎么", "如何", "怎样", "咋", "咋样", "怎么样", "怎么办", "咋办", "怎么弄", "怎么搞", "怎么操作"),
    ("多久", "多长时间", "多少天", "几天", "多长", "多少时间"),
    ("哪里", "哪儿", "哪", "哪边", "在哪", "在哪里", "在哪儿", "啥地方", "什么地方"),
    ("什么时候", "啥时候", "何时", "几时", "哪天", "什么时间", "啥时间"),
    ("多少钱", "多少", "几块", "几块钱"),
    ("什么", "啥", "哪些", "啥子"),
    ("为什么", "为啥", "咋回事", "怎么回事"),
)

_QUESTION_WORDS = frozenset(group[0] for group in BUILTIN_SYNONYMS)

# Filler and function words that say nothing about which question is asked.
STOPWORDS: frozenset[str] = frozenset("""
请问 问问 问下 问一下 想问 想问下 想问一下 我想 想 问 一下 下 请 麻烦 麻烦问下 谢谢 谢啦 感谢 多谢
那个 这个 那 这 个 就是 然后 还有 还是 或者 而且 但是 不过 所以 因为 如果 的话
呀 啊 吗 嘛 呢 吧 哦 噢 喔 哈 哈哈 哈哈哈 嗯 嗯嗯 额 呃 啦 咯 哇 耶 哎 唉 诶 欸 么 滴 哒 捏 鸭
了 的 得 地 着 过 是 都 也 还 就 才 又 再 很 太 挺 好 在 和 跟 与 及 或 对 把 被 给 让 从 到 向 为
我 我们 你 你们 您 他 她 它 他们 她们 咱 咱们 俺 自己 大家 亲 亲们 宝宝 宝子 姐妹 姐妹们 家人们 朋友们
有 没 没有 有没有 有人 有谁 谁 谁知道 知道 有人知道 请教 求 求助 求问 急急急
能 能不能 可以 可不可以 可以吗 行 行不行 会 要 需要 想要 应该 是不是 是否 吗亲
小助手 助手 机器人 群主 老师 小姐姐 小哥哥 您好 你好 hello hi 在吗 在不在
一 一个 一些 这样 那样 这么 那么 这边 那边 现在 刚刚 刚才 今天 一直 已经
""".split())

# Question markers: a message containing one of these, unanswered, is logged for ops.
QUESTION_MARKERS = re.compile(
    r"[?？]|吗|么$|怎么|如何|怎样|咋|多少|多久|几天|几点|哪|什么|啥|为什么|为啥|能不能|可不可以|可以不|"
    r"是不是|有没有|有无|求问|请问|请教")

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Keep letters, digits and CJK; everything else (punctuation, emoji, symbols) separates words.
_NON_WORD = re.compile(r"[^0-9a-z\u3400-\u9fff\uf900-\ufaff]+")

def normalize(text: str) -> str:
    """NFKC, lower case, punctuation and emoji replaced by single spaces."""
    return " ".join(_NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split())


def question_key(question: str) -> str:
    """What makes two questions the same entry: the text without case, spaces, punctuation or emoji."""
    return normalize(question).replace(" ", "")[:255]


def looks_like_question(text: str) -> bool:
    """Does the message ask something (so that going unanswered is worth telling ops)?"""
    return bool(QUESTION_MARKERS.search(unicodedata.normalize("NFKC", text)))


_tokenizer: jieba.Tokenizer | None = None
_tokenizer_lock = threading.Lock()


def shared_tokenizer() -> jieba.Tokenizer:
    """This process's jieba tokenizer, initialised on first use (about a second: call it off the loop)."""
    global _tokenizer
    with _tokenizer_lock:
        if _tokenizer is None:
            jieba.setLogLevel(logging.WARNING)
            tokenizer = jieba.Tokenizer()
            tokenizer.initialize()
            _tokenizer = tokenizer
        return _tokenizer


class Analyzer:
    """Turns text into weighted features; holds the synonyms and adds domain words to the tokenizer."""

    def __init__(self, tokenizer: jieba.Tokenizer, synonyms: Iterable[Sequence[str]] = (),
                 stopwords: Iterable[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stopwords = STOPWORDS | {normalize(w) for w in stopwords}
        self.canonical: dict[str, str] = {}
        # Every word of every synonym group (heads included).
        self.synonym_words: set[str] = set()
        for group in (*BUILTIN_SYNONYMS, *synonyms):
            words = [normalize(w).replace(" ", "") for w in group]
            words = [w for w in words if w]
            for word in words[1:]:
                self.canonical.setdefault(word, words[0])
            self.synonym_words.update(words)
            self.add_words(words)
        self._known: set[str] = set()

    def add_words(self, words: Iterable[str]) -> None:
        """Teach the tokenizer domain words (e.g. 运费险, 以旧换新) so it keeps them whole."""
        freq = self.tokenizer.FREQ
        for word in words:
            if len(word) >= 2 and not freq.get(word):
                self.tokenizer.add_word(word, freq=max(self.tokenizer.suggest_freq(word), 10))

    def learn_terms(self, texts: Iterable[str]) -> None:
        """Add the short terms among an entry's question and aliases ("运费险", not "怎么退货") as words.

        Only terms of up to MAX_TERM characters that hold no filler or question word: a longer phrase
        kept whole would stop matching its own parts.
        """
        terms = []
        for text in texts:
            term = normalize(text).replace(" ", "")
            if not (2 <= len(term) <= MAX_TERM) or term in self._known or term in self.synonym_words:
                continue
            self._known.add(term)
            if not any(w in self.stopwords or w in self.synonym_words for w in self.tokenizer.cut(term)):
                terms.append(term)
        self.add_words(terms)

    def words(self, text: str) -> list[str]:
        """The message's meaningful words: segmented, synonyms mapped, filler dropped."""
        out = []
        for chunk in normalize(text).split(" "):
            if not chunk:
                continue
            for word in self.tokenizer.cut(chunk):
                word = self.canonical.get(word, word)
                if word and word not in self.stopwords and not word.isspace():
                    out.append(word)
        return out

    def features(self, text: str) -> dict[str, float]:
        """Weighted features: words (1.0), the words inside longer ones (0.8), other
        character bigrams (0.5) and characters (0.2)."""
        feats: dict[str, float] = {}
        for word in self.words(text):
            feats[word] = WORD
            if len(word) > 1 and _CJK.match(word):
                if len(word) > 2:
                    freq = self.tokenizer.FREQ
                    for size in (2, 3) if len(word) > 3 else (2,):
                        for i in range(len(word) - size + 1):
                            gram = word[i:i + size]
                            # A part that is a word itself ("电子发票" → 发票) counts nearly in full.
                            weight = SUBWORD if freq.get(gram) else BIGRAM if size == 2 else 0.0
                            if weight and feats.get(gram, 0.0) < weight:
                                feats[gram] = weight
                for char in word:
                    if char not in self.stopwords and feats.get(char, 0.0) < CHAR:
                        feats[char] = CHAR
        return feats

    def cluster_key(self, text: str) -> str:
        """A key shared by rewordings of one question: the characters of its meaningful words (synonyms
        mapped, filler and question words dropped), sorted, so that wording, word order and jieba's word
        boundaries do not matter ("能开专票吗" and "专票怎么开" are one question)."""
        words = [w for w in self.words(text) if w not in _QUESTION_WORDS]
        # Single filler characters jieba glued to a word ("能开") are dropped too.
        chars = set("".join(words)) - self.stopwords
        return "".join(sorted(chars))[:255]


@dataclass(frozen=True)
class Entry:
    """What the matcher needs of an FAQ entry."""

    id: int
    question: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    entry_id: int
    question: str
    confidence: float


@dataclass
class _Doc:
    entry: Entry
    # One feature dict per variant: the question, then each alias.
    variants: list[dict[str, float]]
    length: float = 0.0
    # Each variant's IDF-weighted mass (the denominator of its share of the confidence).
    masses: list[float] = field(default_factory=list)


@dataclass
class FaqIndex:
    """An immutable index over a set of entries (rebuilt when the entries change)."""

    analyzer: Analyzer
    docs: dict[int, _Doc] = field(default_factory=dict)
    idf: dict[str, float] = field(default_factory=dict)
    postings: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    unknown_idf: float = 0.0
    avg_length: float = 1.0

    @classmethod
    def build(cls, analyzer: Analyzer, entries: Iterable[Entry]) -> FaqIndex:
        entries = list(entries)
        for entry in entries:
            analyzer.learn_terms((entry.question, *entry.aliases))
        index = cls(analyzer)
        df: dict[str, int] = {}
        union_by_doc: dict[int, dict[str, float]] = {}
        for entry in entries:
            variants = [analyzer.features(text) for text in (entry.question, *entry.aliases)]
            variants = [v for v in variants if v]
            if not variants:
                continue
            union: dict[str, float] = {}
            for variant in variants:
                for feat, weight in variant.items():
                    # Term frequency across variants: a word in several aliases is central to the entry.
                    union[feat] = union.get(feat, 0.0) + weight
            doc = _Doc(entry, variants, sum(union.values()))
            index.docs[entry.id] = doc
            union_by_doc[entry.id] = union
            for feat in union:
                df[feat] = df.get(feat, 0) + 1
        n = len(index.docs)
        index.idf = {feat: _idf(n, count) for feat, count in df.items()}
        index.unknown_idf = _idf(n, 0)
        index.avg_length = (sum(d.length for d in index.docs.values()) / n) if n else 1.0
        for doc in index.docs.values():
            doc.masses = [sum(w * index.idf[f] for f, w in variant.items()) for variant in doc.variants]
        for entry_id, union in union_by_doc.items():
            norm = BM25_K1 * (1 - BM25_B + BM25_B * index.docs[entry_id].length / index.avg_length)
            for feat, tf in union.items():
                if tf >= WORD or len(feat) > 1:  # single characters refine, they never nominate
                    saturated = tf * (BM25_K1 + 1) / (tf + norm)
                    index.postings.setdefault(feat, []).append((entry_id, saturated))
        return index

    def __len__(self) -> int:
        return len(self.docs)

    def search(self, text: str, limit: int = 5) -> list[Match]:
        """The best entries for a message, most confident first (confidence in [0, 1])."""
        return self.search_features(self.analyzer.features(text), limit, topic_only=not looks_like_question(text))

    def search_features(self, query: dict[str, float], limit: int = 5, *, topic_only: bool = False) -> list[Match]:
        """Search with features from Analyzer.features; `topic_only` for a message that asks nothing."""
        if not query or not self.docs:
            return []
        idf, unknown = self.idf, self.unknown_idf
        scores: dict[int, float] = {}
        lists = sorted((len(p), feat, p) for feat in query if (p := self.postings.get(feat)) is not None)
        # Features in very many entries (怎么, 门店 in a big catalogue) barely discriminate: they still count
        # in the confidence, but only the rarer ones nominate candidates (at least the rarest one does).
        cap = max(NOMINATE_MIN, len(self.docs) // NOMINATE_SHARE)
        for n, (size, feat, postings) in enumerate(lists):
            if n and size > cap:
                break
            w = query[feat] * idf[feat]
            get = scores.get
            for entry_id, saturated in postings:
                scores[entry_id] = get(entry_id, 0.0) + w * saturated
        if not scores:
            return []
        query_mass = sum(weight * idf.get(feat, unknown) for feat, weight in query.items())
        one_word = topic_only and sum(1 for weight in query.values() if weight >= WORD) == 1
        candidates = heapq.nlargest(CANDIDATES, scores.items(), key=lambda item: item[1])
        matches = []
        for entry_id, _ in candidates:
            doc = self.docs[entry_id]
            best = 0.0
            for variant, variant_mass in zip(doc.variants, doc.masses, strict=True):
                shared = 0.0
                for feat, q in query.items():
                    weight = variant.get(feat)
                    if weight is not None:
                        shared += (q if q < weight else weight) * idf[feat]
                if shared:
                    confidence = (shared / query_mass) ** QUERY_SIDE * (shared / variant_mass) ** (1 - QUERY_SIDE)
                    best = max(best, confidence)
            if one_word and best < 0.999:
                best *= ONE_WORD
            if best > 0:
                matches.append(Match(entry_id, doc.entry.question, min(best, 1.0)))
        matches.sort(key=lambda m: (-m.confidence, m.entry_id))
        return matches[:limit]


def _idf(n: int, df: int) -> float:
    """BM25's IDF, kept positive (a feature in most entries still counts a little)."""
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


@dataclass(frozen=True)
class Decision:
    """What to do with a message: answer one entry, suggest some, or stay silent."""

    answer: Match | None
    suggestions: tuple[Match, ...]
    best: float


def may_suggest(text: str) -> bool:
    """Suggestions go to messages that ask something, or name a bare topic ("积分", "退货"): chat that
    merely mentions a topic ("今天的会员日买了好多") gets nothing."""
    return looks_like_question(text) or len(question_key(text)) <= TOPIC_CHARS


def decide(matches: Sequence[Match], *, answer_threshold: float, suggest_threshold: float,
           max_suggestions: int, suggest: bool = True) -> Decision:
    """Above the answer threshold: answer the best; in the band below it: suggest (if `suggest`);
    else silence."""
    best = matches[0].confidence if matches else 0.0
    if matches and best >= answer_threshold:
        return Decision(matches[0], (), best)
    if not suggest:
        return Decision(None, (), best)
    suggestions = tuple(m for m in matches if m.confidence >= suggest_threshold)[:max_suggestions]
    return Decision(None, suggestions, best)
