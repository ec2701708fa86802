"""The FAQ matcher and CSV format on their own (no database): what members type against what ops wrote."""

from __future__ import annotations

import pytest

from bench.faq_match import evaluate, load_labelled, real_entries
from bot.config import FaqConfig
from handlers.faq.index import (
    Analyzer,
    Entry,
    FaqIndex,
    decide,
    looks_like_question,
    may_suggest,
    question_key,
    shared_tokenizer,
)
from handlers.faq.transfer import CsvProblem, read_csv, write_csv

ENTRIES = [
    Entry(1, "怎么申请退货？", ("退货流程", "想退货")),
    Entry(2, "优惠券怎么用？", ("用券", "优惠券用不了")),
    Entry(3, "积分怎么获得？", ("怎么赚积分", "积分规则")),
    Entry(4, "积分会过期吗？", ("积分有效期", "积分清零")),
    Entry(5, "有运费险吗？", ("运费险", "退货险")),
    Entry(6, "门店几点营业？", ("营业时间", "门店几点开门")),
]


@pytest.fixture(scope="module")
def tokenizer():  # noqa: ANN201 - jieba.Tokenizer
    return shared_tokenizer()


@pytest.fixture
def index(tokenizer) -> FaqIndex:
    cfg = FaqConfig()
    return FaqIndex.build(Analyzer(tokenizer, cfg.synonyms, cfg.stopwords), ENTRIES)


def best(index: FaqIndex, text: str) -> tuple[int | None, float]:
    found = index.search(text, limit=3)
    return (found[0].entry_id, found[0].confidence) if found else (None, 0.0)


def test_the_question_as_written_or_an_alias_is_a_certain_match(index):
    assert best(index, "怎么申请退货？") == (1, pytest.approx(1.0))
    assert best(index, "积分有效期") == (4, pytest.approx(1.0))


def test_filler_words_emoji_full_width_and_case_do_not_change_the_match(index):
    plain_id, plain = best(index, "怎么申请退货")
    assert plain_id == 1
    for text in ("请问那个怎么申请退货呀？？😂", "怎么申请退货！！", "怎么申请退货 ～ 啊", "ＨＩ，怎么申请退货"):
        assert best(index, text) == (1, pytest.approx(plain))


def test_paraphrases_with_question_word_synonyms_and_typos_are_answered(index):
    cfg = FaqConfig()
    for text, entry in (("如何退货啊", 1), ("优惠卷咋用", 2), ("积份会不会清零", 4), ("积分怎么攒", 3)):
        found_id, confidence = best(index, text)
        assert (found_id, confidence >= cfg.answer_threshold) == (entry, True), (text, confidence)


def test_a_domain_synonym_from_the_config_is_what_makes_a_typo_match(tokenizer):
    without = FaqIndex.build(Analyzer(tokenizer, [], []), ENTRIES)
    with_typo = FaqIndex.build(Analyzer(tokenizer, [["优惠券", "优惠卷"]], []), ENTRIES)
    assert best(with_typo, "优惠卷怎么用")[1] == pytest.approx(1.0)
    assert best(without, "优惠卷怎么用")[1] < best(with_typo, "优惠卷怎么用")[1]


def test_ordinary_chat_stays_below_the_suggestion_band(index):
    cfg = FaqConfig()
    for text in ("今天天气真好", "哈哈哈哈", "收到啦谢谢大家", "晚上吃什么呢", "刚下班累死了", "好的👌"):
        assert best(index, text)[1] < cfg.suggest_threshold, text


def test_a_lone_topic_word_is_suggested_not_answered(index):
    cfg = FaqConfig()
    matches = index.search("积分", limit=3)
    decision = decide(matches, answer_threshold=cfg.answer_threshold, suggest_threshold=cfg.suggest_threshold,
                      max_suggestions=cfg.max_suggestions)
    assert decision.answer is None
    assert decision.suggestions and {m.entry_id for m in decision.suggestions} <= {3, 4}
    # Asked as a question, the same word is no longer just a topic: it scores higher.
    assert index.search("积分？", limit=1)[0].confidence > matches[0].confidence


def test_entries_short_terms_become_words_but_phrases_do_not(tokenizer):
    analyzer = Analyzer(tokenizer, [], [])
    FaqIndex.build(analyzer, [Entry(1, "支持以旧换新吗？", ("以旧换新", "旧衣回收怎么退货"))])
    assert "以旧换新" in list(tokenizer.cut("我想以旧换新"))
    assert "旧衣回收怎么退货" not in list(tokenizer.cut("旧衣回收怎么退货"))


def test_decide_answers_above_the_threshold_suggests_in_the_band_and_is_silent_below(index):
    matches = index.search("积分多久会清零呢", limit=3)
    top = matches[0].confidence
    answer = decide(matches, answer_threshold=top, suggest_threshold=top / 2, max_suggestions=2)
    assert answer.answer == matches[0] and answer.suggestions == ()
    band = decide(matches, answer_threshold=top + 0.01, suggest_threshold=0.01, max_suggestions=2)
    assert band.answer is None and band.suggestions == tuple(matches[:2])
    silent = decide(matches, answer_threshold=top + 0.02, suggest_threshold=top + 0.01, max_suggestions=2)
    assert silent.answer is None and silent.suggestions == ()


def test_rewordings_of_one_question_share_a_cluster_key(tokenizer):
    analyzer = Analyzer(tokenizer, FaqConfig().synonyms, [])
    assert analyzer.cluster_key("请问怎么开专票呀？") == analyzer.cluster_key("专票如何开") != ""
    assert analyzer.cluster_key("专票如何开") != analyzer.cluster_key("专票多少钱")


def test_question_keys_and_question_markers():
    assert question_key("Ｖip 怎么开通？！") == question_key("vip怎么开通") == "vip怎么开通"
    assert [looks_like_question(t) for t in ("几点开门", "能开专票吗", "为啥没到", "好的收到", "哈哈哈")] == [
        True, True, True, False, False]


def test_the_labelled_set_keeps_its_precision_and_recall(tokenizer):
    """A regression floor on bench/data (the benchmark prints the exact figures)."""
    cfg = FaqConfig()
    index = FaqIndex.build(Analyzer(tokenizer, cfg.synonyms, cfg.stopwords), real_entries())
    quality = evaluate(index, cfg, load_labelled())
    assert quality.precision >= 0.93 and quality.recall >= 0.8
    assert quality.negatives_answered <= 2


# -- CSV ------------------------------------------------------------------------------------------------


def test_csv_with_bom_optional_aliases_and_quoted_commas_reads_back_what_was_written():
    data = "\ufeffQuestion,Answer\n怎么退货？,\"在订单页申请，按地址寄回\"\n\n几点发货？,下午四点前当天发\n".encode()
    rows = read_csv(data)
    assert [(r.line, r.question, r.answer, r.aliases) for r in rows] == [
        (2, "怎么退货？", "在订单页申请，按地址寄回", ()), (4, "几点发货？", "下午四点前当天发", ())]
    again = read_csv(write_csv([("怎么退货？", "多行\n答案, 带逗号", ("退货流程", "想退货"))]))
    assert [(r.question, r.answer, r.aliases) for r in again] == [("怎么退货？", "多行\n答案, 带逗号", ("退货流程", "想退货"))]


def test_csv_problems_name_every_bad_line():
    data = "question,answer,aliases\n怎么退货？,,a\n，，,答\n怎么退货,重复\n好问题,好答案,a|b|c,多余\n".encode()
    with pytest.raises(CsvProblem) as problem:
        read_csv(data)
    assert str(problem.value).splitlines() == [
        "line 2: the answer is empty",
        "line 3: the question has no letters, digits or Chinese characters",
        "line 5: 4 columns, the header has 3 (quote a value that contains a comma)",
    ]


def test_csv_rejects_a_wrong_header_a_duplicate_question_and_non_utf8():
    with pytest.raises(CsvProblem, match="line 1: the header must be question,answer"):
        read_csv(b"q,a\nx,y\n")
    with pytest.raises(CsvProblem, match="line 3: the same question as line 2"):
        read_csv("question,answer\n怎么退货？,a\n怎么 退货!,b\n".encode())
    with pytest.raises(CsvProblem, match="not UTF-8"):
        read_csv("question,answer\n怎么退货,答案\n".encode("gbk"))
    with pytest.raises(CsvProblem, match="empty"):
        read_csv(b"\n\n")


def test_chat_that_mentions_a_topic_gets_no_suggestion_but_a_question_or_bare_topic_does(index):
    def suggested(text: str) -> tuple[int, ...]:
        decision = decide(index.search(text, limit=3), answer_threshold=0.99, suggest_threshold=0.2,
                          max_suggestions=3, suggest=may_suggest(text))
        return tuple(m.entry_id for m in decision.suggestions)

    assert suggested("昨天积分好像多了一些耶") == ()
    assert 3 in suggested("积分") and 3 in suggested("积分到底怎么来的？")
