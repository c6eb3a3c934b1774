"""GSM8K grading and loading."""

import json

import pytest

from corpus_proximity.errors import InputError
from corpus_proximity.evals.gsm8k import GSM8KSample, extract_answer, load_gsm8k, same_number


@pytest.mark.parametrize("completion, expected", [
    ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),      # GSM8K reference format
    ("16 - 3 = <<16-3=13>>13 eggs\nA: 26", "26"),                        # published model solutions
    ("The answer is $1,000.00 dollars.", "1000"),                         # currency, commas, decimals, units
    ("Total = 2 + 1 = 3. Therefore the robe takes \\(\\boxed{3}\\) bolts.", "3"),
    ("So he pays \\boxed{\\frac{3}{4}} of it", "0.75"),
    ("x = 3/4", "0.75"),
    ("The temperature drops to -5 degrees.", "-5"),
    ("16-3", "3"),                                                        # a minus between operands is not a sign
    ("Final answer: 12.50", "12.5"),
    ("#### 1,234,567", "1234567"),
    ("The share is 50%.", "50"),
    ("answer: 7 apples\nthen 9 more were eaten", "7"),                    # the closing phrase beats the last number
    ("first 12, then 15, so 27 in all", "27"),                            # else the last number
    ("I cannot solve this.", None),
    ("", None),
])
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_numbers_compare_by_value():
    assert same_number("18", "18.00") and same_number("0.75", "3/4") and same_number("-5", "-5.0")
    assert not same_number("18", "19") and not same_number(None, "1") and not same_number("1e", "1")


def test_gsm8k_sample_grades_its_reference():
    s = GSM8KSample("gsm8k-test-0", "How many?", "2 + 1 = <<2+1=3>>3\n#### 3")
    assert s.reference == "3"
    assert s.grade("so the answer is 3.") == (True, "3")
    assert s.grade("#### 4") == (False, "4")
    assert s.grade("no idea") == (False, None)


def test_load_gsm8k_from_file_and_folder(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(5)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from_file = load_gsm8k(tmp_path / "test.jsonl", limit=3)
    assert [s.id for s in from_file] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    assert [s.reference for s in load_gsm8k(tmp_path, "test")] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist"),
    ('{"question": "q"}\n', "needs string fields 'question' and 'answer'"),
    ('{"question": "q", "answer": "no number here"}\n', "has no final number"),
    ("not json\n", "test.jsonl:1: not valid JSON"),
])
def test_bad_gsm8k_files(tmp_path, content, needle):
    if content is not None:
        (tmp_path / "test.jsonl").write_text(content)
    with pytest.raises(InputError, match=needle):
        load_gsm8k(tmp_path / "test.jsonl")


def test_hub_unreachable_says_where_to_get_gsm8k(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(InputError, match="grade-school-math.*rollout.data_path"):
        load_gsm8k(None)


def test_shared_gsm8k_test_split_parses():
    from pathlib import Path

    p = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
    if not (p / "test.jsonl").is_file():
        pytest.skip("../shared/data/gsm8k is not beside this checkout")
    samples = load_gsm8k(p, "test")
    assert len(samples) == 1319
    assert all(s.grade(s.answer)[0] for s in samples)  # every reference solution grades as correct


def _shared_solutions():
    from pathlib import Path

    p = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"
    if not p.is_file():
        pytest.skip("../shared/data/gsm8k/example_model_solutions.jsonl is not beside this checkout")
    import json

    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def test_grader_agrees_with_the_published_grades_of_real_model_answers():
    rows = _shared_solutions()
    models = [k for k, v in rows[0].items() if isinstance(v, dict) and "is_correct" in v]
    agree = [GSM8KSample(str(i), r["question"], r["ground_truth"]).grade(r[m]["solution"])[0] == r[m]["is_correct"]
             for i, r in enumerate(rows) for m in models]
    assert len(agree) == 4 * 1319 and sum(agree) / len(agree) >= 0.999


def test_the_last_anchor_is_the_answer_and_latex_goes_through_math_verify():
    r = _shared_solutions()[0]  # Janet's ducks: 18
    s = GSM8KSample("0", r["question"], r["ground_truth"])
    wrong_first = r["6b_finetuning"]["solution"].replace("A: 26", "#### 26")  # a real wrong answer, then a fix
    assert s.grade(wrong_first)[0] is False
    assert s.grade(wrong_first + "\nWait, she also bakes with 4: 16 - 3 - 4 = 9, 9 * 2 = \\boxed{18}") == (True, "18")
    assert s.grade(wrong_first + "\nSo she makes \\boxed{18\\text{ dollars}} a day")[0] is True
    assert s.grade(wrong_first + "\nSo she makes \\boxed{\\dfrac{36}{2}}")[0] is True
    assert s.grade("\\boxed{19}") == (False, "19")
    half = GSM8KSample("h", "?", "#### 0.5")
    assert half.grade("so \\boxed{\\frac{1}{2}}")[0] and half.grade("so \\boxed{\\frac{1}{3}}")[0] is False
