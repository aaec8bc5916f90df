"""CORE's pieces one by one: the prompts (character for character nanochat's), the few-shot draw (nanochat's seeding),
the bundle (its format, its subsampling, every way it can be broken), and the scoring, on a model whose every
prediction is known by construction so each expected decision is written down by hand.

The end-to-end check, `nanogpt eval --core` on the fixture bundle against an independent computation, and the
training hook are in test_eval_cli.py.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from nanogpt_core.data.tokenizer import MIN_VOCAB_SIZE, Tokenizer
from nanogpt_core.errors import DataError
from nanogpt_core.evals import CoreTask, TaskResult, find_bundle, load_bundle
from nanogpt_core.evals.bundle import bundle_locations
from nanogpt_core.evals.core import ScoredSequence, evaluate_task, score_sequences, task_sequences
from nanogpt_core.evals.prompts import (
    fewshot_indices,
    render_language_modeling,
    render_multiple_choice,
    render_prompts,
    render_schema,
)

FIXTURE = Path(__file__).parent / "data" / "eval_bundle"


# --- prompts: the exact strings nanochat's templates produce --------------------------------------------------------


def test_multiple_choice_prompts_zero_shot_and_few_shot():
    item = {"query": "The sky is", "choices": ["blue.", "a cat."], "gold": 0}
    assert render_multiple_choice(item, " ", []) == ["The sky is blue.", "The sky is a cat."]
    shots = [{"query": "Question: 2+2?", "choices": ["3", "4"], "gold": 1},
             {"query": "Question: Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "gold": 0}]
    item = {"query": "Question: Which is a colour?", "choices": ["red", "seven"], "gold": 0}
    assert render_multiple_choice(item, "\nAnswer: ", shots) == [
        "Question: 2+2?\nAnswer: 4\n\nQuestion: Capital of France?\nAnswer: Paris\n\n"
        "Question: Which is a colour?\nAnswer: red",
        "Question: 2+2?\nAnswer: 4\n\nQuestion: Capital of France?\nAnswer: Paris\n\n"
        "Question: Which is a colour?\nAnswer: seven",
    ]


def test_schema_prompts_put_each_context_before_the_one_continuation():
    shot = {"context_options": ["The man fed the dog because the dog", "The man fed the dog because the man"],
            "continuation": "was hungry.", "gold": 0}
    item = {"context_options": ["Anna thanked Mary because Anna", "Anna thanked Mary because Mary"],
            "continuation": "had helped her.", "gold": 1}
    assert render_schema(item, " ", [shot]) == [
        "The man fed the dog because the dog was hungry.\n\nAnna thanked Mary because Anna had helped her.",
        "The man fed the dog because the dog was hungry.\n\nAnna thanked Mary because Mary had helped her.",
    ]


def test_language_modeling_prompts_trim_contexts_and_strip_the_prompt_without():
    shot = {"context": "  GEOGRAPHY: The capital of Italy \t", "continuation": "Rome"}
    item = {"context": "GEOGRAPHY: The capital of Norway ", "continuation": "Oslo"}
    assert render_language_modeling(item, "\nAnswer: ", [shot]) == [
        "GEOGRAPHY: The capital of Italy\nAnswer: Rome\n\nGEOGRAPHY: The capital of Norway\nAnswer:",
        "GEOGRAPHY: The capital of Italy\nAnswer: Rome\n\nGEOGRAPHY: The capital of Norway\nAnswer: Oslo",
    ]
    # zero-shot with the default delimiter: the space belongs to the scored continuation
    assert render_language_modeling({"context": "He opened the ", "continuation": "door"}, " ", []) == [
        "He opened the", "He opened the door"]


def test_prompts_of_the_fixture_bundle_items():
    """render_prompts draws the few-shot examples from the task's (shuffled) items: item 0 of the 3-shot task."""
    bundle = load_bundle(FIXTURE)
    task = next(t for t in bundle.tasks if t.label == "tiny_question")
    items = bundle.items(task)
    assert fewshot_indices(0, 6, 3) == [4, 1, 5]
    expected_shots = ("Question: What does a dictionary map?\nAnswer: keys to values\n\n"
                      "Question: Which keyword defines a function in Python?\nAnswer: def\n\n"
                      "Question: Which value is false?\nAnswer: None\n\n")
    assert [items[i]["query"] for i in (4, 1, 5)] == ["Question: What does a dictionary map?",
                                                     "Question: Which keyword defines a function in Python?",
                                                     "Question: Which value is false?"]
    prompts = render_prompts(task.task_type, items, 0, task.continuation_delimiter, task.num_fewshot)
    assert prompts[1] == expected_shots + "Question: What does len return for a list?\nAnswer: the number of items"


def _nanochat_draw(index: int, num_items: int, num_fewshot: int) -> list[int]:
    """nanochat's draw, literally: sample from the list of every other index."""
    rng = random.Random(1234 + index)
    return rng.sample([i for i in range(num_items) if i != index], num_fewshot)


@pytest.mark.parametrize(("num_items", "num_fewshot"), [(11, 10), (50, 5), (1000, 10), (30_000, 10), (2, 1)])
def test_fewshot_draw_is_nanochats(num_items, num_fewshot):
    for index in {0, 1, num_items // 2, num_items - 1}:
        drawn = fewshot_indices(index, num_items, num_fewshot)
        assert drawn == _nanochat_draw(index, num_items, num_fewshot)
        assert index not in drawn and len(set(drawn)) == num_fewshot


def test_fewshot_draw_takes_all_the_others_when_the_subsample_is_smaller():
    assert sorted(fewshot_indices(2, 4, 10)) == [0, 1, 3]
    assert fewshot_indices(0, 1, 5) == [] and fewshot_indices(3, 10, 0) == []


# --- the bundle ------------------------------------------------------------------------------------------------------


def test_fixture_bundle_tasks_as_core_yaml_and_the_csv_give_them():
    bundle = load_bundle(FIXTURE)
    assert [(t.label, t.task_type, t.num_fewshot, t.continuation_delimiter, t.random_baseline)
            for t in bundle.tasks] == [
        ("tiny_choice_zeroshot", "multiple_choice", 0, " ", 25.0),
        ("tiny_question", "multiple_choice", 3, "\nAnswer: ", 25.0),
        ("tiny_schema", "schema", 2, " ", 50.0),
        ("tiny_trivia", "language_modeling", 2, "\nAnswer: ", 0.0),
        ("tiny_lambada", "language_modeling", 0, " ", 0.0),
    ]
    assert find_bundle(FIXTURE.parent) == FIXTURE  # the folder holding eval_bundle/ works too


def test_items_are_shuffled_with_nanochats_seed_before_the_subsample():
    bundle = load_bundle(FIXTURE)
    task = bundle.tasks[2]
    lines = [json.loads(line) for line in (FIXTURE / "eval_data" / task.dataset_uri).read_text().splitlines()]
    random.Random(1337).shuffle(lines)
    assert bundle.items(task) == lines
    assert bundle.items(task, 4) == lines[:4] and bundle.items(task, -1) == lines


def test_missing_bundle_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "nanochat"))
    with pytest.raises(DataError) as err:
        load_bundle()
    message = str(err.value)
    assert str(tmp_path / "data" / "core-eval" / "eval_bundle") in message
    assert str(tmp_path / "nanochat" / "eval_bundle") in message
    assert "nanogpt data download core-eval" in message and "\n" not in message
    # a nanochat user's bundle is found where nanochat keeps it
    shutil.copytree(FIXTURE, tmp_path / "nanochat" / "eval_bundle")
    assert load_bundle().folder == tmp_path / "nanochat" / "eval_bundle"
    assert bundle_locations()[0] == tmp_path / "data" / "core-eval" / "eval_bundle"
    with pytest.raises(DataError, match=r"no CORE eval bundle in .*nowhere"):
        load_bundle(tmp_path / "nowhere")


def _broken(tmp_path: Path, file: str, old: str, new: str) -> Path:
    copy = tmp_path / "eval_bundle"
    shutil.copytree(FIXTURE, copy)
    path = copy / file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return copy


@pytest.mark.parametrize(("file", "old", "new", "message"), [
    ("core.yaml", "icl_tasks:", "icl_tasks: [", "is not valid YAML"),
    ("core.yaml", "icl_tasks:", "tasks:", "has no `icl_tasks` list"),
    ("core.yaml", "icl_task_type: schema", "icl_task_type: generation", "has icl_task_type 'generation'"),
    ("core.yaml", "commonsense_reasoning/tiny_schema.jsonl", "../../secrets.jsonl", "points outside eval_data/"),
    ("core.yaml", "commonsense_reasoning/tiny_schema.jsonl", "commonsense_reasoning/gone.jsonl", "the bundle lacks"),
    ("core.yaml", "num_fewshot: [2]", "num_fewshot: [two]", "has num_fewshot"),
    ("eval_meta_data.csv", "tiny_schema,", "other_task,", "no random baseline for tiny_schema"),
    ("eval_meta_data.csv", ",50,", ",fifty,", "the random baseline of tiny_schema is 'fifty'"),
])
def test_a_broken_bundle_is_one_clear_line(tmp_path, file, old, new, message):
    with pytest.raises(DataError, match=message) as err:
        load_bundle(_broken(tmp_path, file, old, new))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("old", "new", "message"), [
    ('"gold": 0}', '"gold": 2}', r"tiny_schema.jsonl:1: gold 2 is not the index of one of its 2 options"),
    ('"continuation": "had finished', '"ending": "had finished', r"tiny_schema.jsonl:1: a schema item needs"),
    ('{"context_options"', '{"context_options"]', r"tiny_schema.jsonl:1 is not JSON"),
])
def test_a_broken_item_names_its_file_and_line(tmp_path, old, new, message):
    bundle = load_bundle(_broken(tmp_path, "eval_data/commonsense_reasoning/tiny_schema.jsonl", old, new))
    with pytest.raises(DataError, match=message):
        bundle.items(bundle.tasks[2])


# --- scoring, on a model whose predictions are known -------------------------------------------------------------

CHAIN = "abcdefghij"  # the model predicts the next letter of this chain (and 'a' after <|bos|>), nothing else


class ChainModel(torch.nn.Module):
    """Logits that depend on the current token alone: 8 for the chain's next byte, 0 for every other token."""

    def __init__(self, tokenizer: Tokenizer):
        super().__init__()
        table = torch.zeros(tokenizer.vocab_size, tokenizer.vocab_size)
        table[tokenizer.bos_id, ord(CHAIN[0])] = 8.0
        for a, b in zip(CHAIN, CHAIN[1:]):
            table[ord(a), ord(b)] = 8.0
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


@pytest.fixture(scope="module")
def byte_tokenizer() -> Tokenizer:
    """No merges: every byte is its own token, so token ids are the characters' codes."""
    tokenizer = Tokenizer.train(["abcdefghij xyz"], MIN_VOCAB_SIZE)
    assert tokenizer.encode("abc") == [97, 98, 99]
    return tokenizer


def _task(task_type: str, label: str = "t") -> CoreTask:
    return CoreTask(label, task_type, f"{label}.jsonl", 0, "", 0.0)


def test_language_modeling_is_right_only_when_greedy_decoding_reproduces_the_continuation(byte_tokenizer):
    items = [{"context": "abc", "continuation": "defg"},   # every letter predicted: right
             {"context": "abc", "continuation": "dxfg"},   # one letter off: wrong
             {"context": "xyz", "continuation": "abc"}]    # after 'z' the model predicts nothing useful: wrong
    result = evaluate_task(ChainModel(byte_tokenizer), byte_tokenizer, _task("language_modeling"), items)
    assert (result.correct, result.items) == (1, 3)


def test_multiple_choice_picks_the_choice_of_lowest_mean_loss_after_the_shared_prefix(byte_tokenizer):
    choices = ["cd", "xy", "cz"]  # 'c','d' both predicted; 'x','y' neither; 'c' yes, 'z' no
    items = [{"query": "ab", "choices": choices, "gold": 0},
             {"query": "ab", "choices": choices, "gold": 1},
             {"query": "ab", "choices": ["xy", "cz", "cd"], "gold": 2}]
    model = ChainModel(byte_tokenizer)
    result = evaluate_task(model, byte_tokenizer, _task("multiple_choice"), items)
    assert (result.correct, result.items) == (2, 3)
    seqs = task_sequences(_task("multiple_choice"), items, byte_tokenizer, [0])
    assert [(s.start, s.end) for s in seqs] == [(3, 5)] * 3  # <|bos|> a b | c d


def test_multiple_choice_whose_choice_is_a_prefix_of_another_scores_as_nanochat(byte_tokenizer):
    """'cd' is all prefix of 'cde': its span is empty, its mean loss NaN; nanochat's min() of [nan, x] is nan, so
    it picks choice 0, and so must we."""
    items = [{"query": "ab", "choices": ["cd", "cde"], "gold": 1}, {"query": "ab", "choices": ["cd", "cde"], "gold": 0}]
    result = evaluate_task(ChainModel(byte_tokenizer), byte_tokenizer, _task("multiple_choice"), items)
    assert result.correct == 1  # the second item, whose gold is 0


def test_schema_scores_the_shared_continuation_after_each_context(byte_tokenizer):
    items = [{"context_options": ["xab", "yqb"], "continuation": "cd", "gold": 0},  # 'b' follows 'a', not 'q'
             {"context_options": ["xab", "yqb"], "continuation": "cd", "gold": 1}]
    result = evaluate_task(ChainModel(byte_tokenizer), byte_tokenizer, _task("schema"), items)
    assert result.correct == 1
    seqs = task_sequences(_task("schema"), items, byte_tokenizer, [0])
    assert [(s.start, s.end) for s in seqs] == [(3, 6), (3, 6)]  # <|bos|> x a | b c d: the shared suffix


def test_a_sequence_longer_than_the_model_takes_keeps_its_end(byte_tokenizer):
    items = [{"context": "x" * 20 + "abc", "continuation": "def"}]
    (seq,) = task_sequences(_task("language_modeling"), items, byte_tokenizer, [0], max_tokens=8)
    assert seq.tokens == [ord(c) for c in "xxabcdef"] and (seq.start, seq.end) == (5, 8)


def test_centring_on_the_random_baseline():
    assert TaskResult("t", "multiple_choice", 0, 25.0, 8, 2).centered == 0.0  # guessing
    assert TaskResult("t", "multiple_choice", 0, 25.0, 8, 8).centered == 1.0
    assert TaskResult("t", "schema", 0, 50.0, 4, 3).centered == pytest.approx(0.5)
    assert TaskResult("t", "schema", 0, 50.0, 4, 1).centered == pytest.approx(-0.5)
    assert TaskResult("t", "language_modeling", 0, 0.0, 5, 2).centered == pytest.approx(0.4)


def test_batching_changes_no_score(tiny_config):
    """All sequences in one padded forward, or each alone: the same decisions, the same mean losses up to the fp32
    noise of another batch shape (measured: identical on this CPU; other kernels for other shapes would round the
    ~9-nat means at ~1e-6, so 1e-5 is allowed). Half the sequences end in the model's own greedy tokens, so the
    exact-match flags are not all False."""
    from nanogpt_core import build_model

    model = build_model(tiny_config)
    model.init_weights()
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)  # nanochat zeroes the head: every choice would tie
    model.eval()
    generator = torch.Generator().manual_seed(3)
    seqs = []
    for n in range(12):
        length = int(torch.randint(4, 24, (1,), generator=generator))
        tokens = torch.randint(0, tiny_config.vocab_size, (length,), generator=generator).tolist()
        if n % 2 == 0:
            with torch.no_grad():
                for _ in range(3):
                    tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
        seqs.append(ScoredSequence(n, 0, tokens, len(tokens) - 3, len(tokens)))
    alone = score_sequences(model, seqs, 0, 1, torch.device("cpu"))
    together = score_sequences(model, seqs, 0, 10_000, torch.device("cpu"))
    assert alone[1] == together[1] == [n % 2 == 0 for n in range(12)]
    assert torch.allclose(torch.tensor(alone[0]), torch.tensor(together[0]), rtol=0, atol=1e-5)
