"""Calibration on labelled pairs: reading, the figures, and a judge driven by a scripted engine."""

import json

import pytest
from support.scripted_engine import ScriptedEngine
from support.judges import position_judge, responses_by_label

from prefgen.roles.judge.calibrate import PairsError, calibration_figures, calibration_rows, read_labelled_pairs
from prefgen.roles.judge.task import JudgeTask

PAIRS = "tests/data/labelled_pairs.jsonl"


def test_pairs_read_from_strings_and_message_lists():
    pairs = read_labelled_pairs(PAIRS)
    assert len(pairs) == 4 and pairs[3]["prompt"] == "Name a mammal that lives in the sea."
    assert pairs[3]["rejected"] == "The shark, which is a mammal."
    assert len(read_labelled_pairs(PAIRS, limit=2)) == 2


@pytest.mark.parametrize("line, message", [
    ("not json", ":1: not valid JSON"),
    ('{"prompt": "q", "chosen": "a"}', ":1: missing rejected"),
    ('{"prompt": "q", "chosen": "", "rejected": "b"}', ":1: 'chosen' must be a non-empty"),
])
def test_bad_pair_lines_name_the_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(PairsError, match=message):
        read_labelled_pairs(path)


def judged(reply, permutations):
    rows = calibration_rows(read_labelled_pairs(PAIRS), PAIRS)
    JudgeTask("j", "m", permutations=permutations, combine_rules={"j": "mean"}).run(rows, ScriptedEngine(reply))
    return calibration_figures(rows)


def test_a_judge_that_knows_the_answers_agrees_in_every_order():
    chosen = {p["chosen"] for p in read_labelled_pairs(PAIRS)}

    def reply(req):
        shown = responses_by_label(req.messages[-1]["content"])
        return [json.dumps({k: {"rationale": "r", "rating": 5 if t in chosen else 2} for k, t in shown.items()})]

    fig = judged(reply, 2)
    assert (fig["agreement"], fig["agreement_ties_half"], fig["ties"]) == (1.0, 1.0, 0.0)
    assert fig["order_consistency"] == 1.0 and fig["orders_compared"] == 4
    assert fig["first_shown_wins"] == 0.5  # the shuffle and its reverse: chosen shown first half the time


def test_a_position_only_judge_is_exposed():
    fig = judged(position_judge(lambda pos, _t: 5 - pos), 2)
    assert fig["first_shown_wins"] == 1.0
    assert fig["order_consistency"] == 0.0  # its verdict flips with the order
    assert fig["ties"] == 1.0 and fig["agreement"] is None  # cancelled: every pair ends tied


class LengthScorer:
    """A stand-in reward model (a RewardEngine's `score`): the longer answer scores higher."""

    def __init__(self, source, eng, device):
        self.source = source

    def score(self, conversations):
        from prefgen.roles.judge.reward import Score

        return [Score(float(len(c[-1]["content"]))) for c in conversations]


class NoChatEngine:
    def __init__(self, *args):
        raise AssertionError("a reward model is not loaded as a chat engine")


def test_a_reward_model_judge_calibrates(tmp_path, monkeypatch):
    import os

    from prefgen.roles.judge.calibrate import calibrate
    from prefgen.config import parse_config

    monkeypatch.setattr(os, "environ", dict(os.environ))  # the engine's environment stays in this test
    monkeypatch.setattr("prefgen.roles.judge.reward.RewardEngine", LengthScorer)
    monkeypatch.setattr("prefgen.engines.engine.VllmEngine", NoChatEngine)
    cfg = parse_config({"models": {"rm": {"kind": "reward_model", "source": str(tmp_path),
                                          "engine": {"device": "cpu"}}, "chat": {}},
                        "generators": [{"model": "chat", "num_completions": 2}], "evolution": {"enabled": False},
                        "judge": {"model": "rm"}, "pairing": {"min_margin": 0.5}})
    pairs = read_labelled_pairs(PAIRS)
    longer_chosen = sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs)
    fig = calibrate(cfg, PAIRS, log=lambda *_: None)
    assert fig["rated"] == 4 and fig["agreement"] == longer_chosen / 4
    # one score per answer, shown in no order: nothing to say about orders or positions
    assert fig["orders_compared"] == 0 and fig["order_consistency"] is None and fig["first_shown_wins"] is None
    assert "verified_pairs" not in fig  # a reward model gives no verdict: no pair check


def scripted_chat_engine(pick):
    """A stand-in VllmEngine class whose judge rates every answer 3 and answers the pair check with pick(shown)."""
    from support.judges import checking_judge

    def rate(req):
        return [json.dumps({k: {"rationale": "r", "rating": 3} for k in responses_by_label(req.messages[-1]["content"])})]

    class Engine(ScriptedEngine):
        def __init__(self, *args):
            super().__init__(checking_judge(pick, rate))

    return Engine


@pytest.mark.parametrize("pick, agreement, consistency, first", [
    ("first", 0.0, 0.0, 1.0),  # always the first shown: flips every time, never both orders for the label
    ("truth", 1.0, 1.0, 0.5),  # names the labelled chosen in both orders
])
def test_calibrate_reports_the_pair_checks_order_consistency_and_first_shown_wins(monkeypatch, pick, agreement,
                                                                                    consistency, first):
    import os

    from prefgen.roles.judge.calibrate import calibrate, figure_lines
    from prefgen.config import parse_config

    chosen = {p["chosen"] for p in read_labelled_pairs(PAIRS)}
    picks = {"first": lambda shown: "A",
             "truth": lambda shown: next(label for label, text in shown.items() if text in chosen)}
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr("prefgen.engines.engine.VllmEngine", scripted_chat_engine(picks[pick]))
    fig = calibrate(parse_config({"judge": {"engine": {"device": "cpu"}}}), PAIRS, log=lambda *_: None)
    assert fig["ties"] == 1.0  # the ratings cannot tell them apart; the labelled pair is checked all the same
    assert fig["verified_pairs"] == 4
    assert (fig["verdict_agreement"], fig["verdict_order_consistency"], fig["verdict_first_shown_wins"]) == (
        agreement, consistency, first)
    assert any(line.startswith("pair check, same verdict in both orders:") for line in figure_lines(fig))
