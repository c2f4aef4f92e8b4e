"""Typed tables without training: kinds, blanks, IDs, notes, specs, thresholds, class weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bundle import columns
from training import TrainingError, data, evaluate, features
from training.__main__ import main
from training.pipeline import Options, class_weight_mode, run


def _load(tmp_path: Path, text: str, target: str = "y", **choices: object) -> data.Dataset:
    path = tmp_path / "table.csv"
    path.write_text(text)
    return data.load_dataset(path, target, data.Choices(**choices))  # type: ignore[arg-type]


def _csv(header: str, rows: list[str]) -> str:
    return header + "\n" + "\n".join(rows) + "\n"


def _column(dataset: data.Dataset, name: str) -> data.Column:
    (column,) = [c for c in dataset.columns if c.name == name]
    return column


def _values(column: data.Column) -> list:
    """Values with NaN as None, so that lists compare."""
    if column.kind == "categorical":
        return column.values.tolist()
    return [None if np.isnan(v) else float(v) for v in column.values]


# --- kinds -----------------------------------------------------------------------------------------


def test_kinds_are_inferred_from_the_cells(tmp_path: Path) -> None:
    dataset = _load(
        tmp_path,
        _csv(
            "num,flag,text,y",
            [
                "1,true,red,a",
                "-2.5,FALSE,blue,b",
                "3e2,True,red,a",
                " 4 , false ,green,b",
            ],
        ),
    )
    kinds = {c.name: c.kind for c in dataset.columns}
    assert kinds == {"num": "numeric", "flag": "boolean", "text": "categorical"}
    assert _values(_column(dataset, "num")) == [1.0, -2.5, 300.0, 4.0]
    assert _values(_column(dataset, "flag")) == [1.0, 0.0, 1.0, 0.0]
    assert _values(_column(dataset, "text")) == ["red", "blue", "red", "green"]
    assert dataset.notes == []


@pytest.mark.parametrize("blank", ["", "NA", "?", "   ", "\t", "null", "NaN", "N/A", " ? "])
def test_missing_markers_and_whitespace_are_blanks_in_every_kind(tmp_path: Path, blank: str):
    rows = [f"{blank},{blank},{blank},a", "1.5,true,red,b", "2.5,false,blue,a", "3.5,true,red,b"]
    dataset = _load(tmp_path, _csv("num,flag,text,y", rows))
    kinds = [c.kind for c in dataset.columns]
    assert kinds == ["numeric", "boolean", "categorical"]
    for column in dataset.columns:
        assert column.missing.tolist() == [True, False, False, False], column.name
    assert _column(dataset, "text").values[0] == columns.BLANK
    assert np.isnan(_column(dataset, "num").values[0])


def test_yes_no_and_one_zero_columns_are_not_boolean(tmp_path: Path) -> None:
    rows = ["yes,1,a", "no,0,b", "yes,1,a", "no,0,b"]
    dataset = _load(tmp_path, _csv("answer,bit,y", rows))
    assert [c.kind for c in dataset.columns] == ["categorical", "numeric"]


def test_number_codes_are_numbers_unless_named_categorical(tmp_path: Path) -> None:
    rows = ["02134,415,a", "02134,510,b", "10001,415,a", "10001,510,b"]
    text = _csv("zip,area,y", rows)
    plain = _load(tmp_path, text)
    assert _column(plain, "zip").kind == "numeric"
    assert _values(_column(plain, "zip")) == [2134.0, 2134.0, 10001.0, 10001.0]

    coded = _load(tmp_path, text, categorical=["zip", "area"])
    assert [c.kind for c in coded.columns] == ["categorical", "categorical"]
    assert _values(_column(coded, "zip")) == ["02134", "02134", "10001", "10001"]
    assert _values(_column(coded, "area")) == ["415", "510", "415", "510"]


def test_exclude_drops_columns_and_records_why(tmp_path: Path) -> None:
    rows = ["1.5,red,9,a", "2.5,blue,8,b", "3.5,red,7,a", "4.5,blue,7,b"]
    dataset = _load(tmp_path, _csv("x,colour,noise,y", rows), exclude=["noise", "colour"])
    assert dataset.features == ["x"]
    assert dataset.left_out == {"noise": "--exclude", "colour": "--exclude"}


def test_mostly_numbers_text_column_gets_a_note(tmp_path: Path) -> None:
    rows = [f"{i % 7},{i},{'ab'[i % 2]}" for i in range(19)] + ["seven,1.5,a"]
    dataset = _load(tmp_path, _csv("m,x,y", rows))
    assert _column(dataset, "m").kind == "categorical"
    (note,) = dataset.notes
    assert note.startswith("column 'm' is numbers except 1 cells ('seven')")
    assert "--exclude" in note


def test_text_column_with_few_numbers_gets_no_note(tmp_path: Path) -> None:
    rows = [f"{'12' if i < 5 else 'abc'[i % 3]},{i * 0.5},{'ab'[i % 2]}" for i in range(20)]
    dataset = _load(tmp_path, _csv("m,x,y", rows))
    assert _column(dataset, "m").kind == "categorical"
    assert dataset.notes == []


# --- ID-like columns -----------------------------------------------------------------------------


def _shuffled(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).permutation(np.arange(1, n + 1)).tolist()


def test_distinct_text_and_row_counter_are_left_out_with_notes(tmp_path: Path) -> None:
    ids = _shuffled(30)
    rows = [f"{k},person {k:03d},{(i * 0.7) % 3:.2f},{'ab'[i % 2]}" for i, k in enumerate(ids)]
    dataset = _load(tmp_path, _csv("id,name,x,y", rows))
    assert dataset.features == ["x"]
    assert dataset.left_out == {
        "id": "its integers just count the rows",
        "name": "every value is distinct text (an ID, a key or a name)",
    }
    assert dataset.notes == [
        "left out column 'id': its integers just count the rows; name it in --features to use it",
        "left out column 'name': every value is distinct text (an ID, a key or a name); "
        "name it in --features to use it",
    ]


def test_row_counter_is_found_when_blank_target_rows_are_dropped(tmp_path: Path) -> None:
    """The ID counts the file's rows; dropping rows with a blank target must not hide it."""
    ids = _shuffled(40, seed=1)
    rows = [f"{k},{i * 0.37:.3f},{'' if i % 10 == 0 else 'ab'[i % 2]}" for i, k in enumerate(ids)]
    dataset = _load(tmp_path, _csv("id,x,y", rows))
    assert dataset.dropped_rows == 4
    assert dataset.features == ["x"]
    assert dataset.left_out == {"id": "its integers just count the rows"}


def test_continuous_distinct_floats_are_never_left_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    values = rng.permutation(np.arange(40) * 1.5 + rng.uniform(0, 0.5, 40)).round(3)
    rows = [f"{v},{'ab'[i % 2]}" for i, v in enumerate(values)]
    dataset = _load(tmp_path, _csv("x,y", rows))
    assert len(set(values.tolist())) == 40
    assert dataset.features == ["x"]
    assert dataset.left_out == {}


def test_distinct_integers_that_do_not_count_rows_are_kept(tmp_path: Path) -> None:
    rows = [f"{k * 3 + 100},{i},{'ab'[i % 2]}" for i, k in enumerate(_shuffled(20))]
    dataset = _load(tmp_path, _csv("code,x,y", rows))
    assert "code" in dataset.features


def test_id_column_with_a_blank_is_kept(tmp_path: Path) -> None:
    rows = [f"{'' if i == 3 else f'user{i}'},{i % 4},{'ab'[i % 2]}" for i in range(20)]
    dataset = _load(tmp_path, _csv("who,x,y", rows))
    assert dataset.features == ["who", "x"]


def test_features_naming_an_id_column_keeps_it(tmp_path: Path) -> None:
    ids = _shuffled(30)
    rows = [f"{k},person {k:03d},{(i * 0.7) % 3:.2f},{'ab'[i % 2]}" for i, k in enumerate(ids)]
    dataset = _load(tmp_path, _csv("id,name,x,y", rows), features=["x", "id", "name"])
    assert dataset.features == ["x", "id", "name"]
    assert [c.kind for c in dataset.columns] == ["numeric", "numeric", "categorical"]
    assert dataset.left_out == {}
    assert dataset.notes == []


# --- the target --------------------------------------------------------------------------------


def test_rows_with_a_blank_target_are_dropped_and_counted(tmp_path: Path) -> None:
    rows = ["1,a", "2,", "3,b", "4,NA", "5, ", "6,a", "7,?", "8,b"]
    dataset = _load(tmp_path, _csv("x,y", rows), features=["x"])
    assert dataset.dropped_rows == 4
    assert dataset.rows == 4
    assert dataset.y.tolist() == ["a", "b", "a", "b"]
    assert _values(_column(dataset, "x")) == [1.0, 3.0, 6.0, 8.0]  # features follow their rows
    assert dataset.notes == ["dropped 4 rows whose target 'y' is blank"]


@pytest.mark.parametrize(
    ("cells", "labels", "kind"),
    [
        (["1", "0", "1", "0"], [1, 0, 1, 0], int),
        (["1.5", "2", "1.5", "2"], [1.5, 2.0, 1.5, 2.0], float),
        (["TRUE", "false", "True", "FALSE"], [True, False, True, False], bool),
        ([" yes", "no ", "yes", "no"], ["yes", "no", "yes", "no"], str),
    ],
    ids=["ints", "floats", "booleans", "text"],
)
def test_target_labels_are_typed(tmp_path: Path, cells: list, labels: list, kind: type) -> None:
    rows = [f"{i * 1.5},{cell}" for i, cell in enumerate(cells)]
    dataset = _load(tmp_path, _csv("x,y", rows))
    assert dataset.y.tolist() == labels
    assert all(type(label) is kind for label in dataset.y.tolist())


# --- every problem in one message ----------------------------------------------------------------


def test_every_choice_problem_is_reported_at_once(tmp_path: Path) -> None:
    rows = ["1,red,a", "2,blue,b"]
    with pytest.raises(TrainingError) as caught:
        _load(
            tmp_path,
            _csv("x,colour,y", rows),
            features=["x", "nope", "y", "colour"],
            categorical=["zip"],
            exclude=["y", "colour"],
        )
    message = str(caught.value)
    for fragment in (
        "--features names unknown column 'nope'",
        "target column 'y' is also listed in --features",
        "--categorical names unknown column 'zip'",
        "target column 'y' is listed in --exclude",
        "'colour' is in both --features and --exclude",
    ):
        assert fragment in message
    assert "\n" not in message


def test_every_column_problem_is_reported_at_once(tmp_path: Path) -> None:
    rows = ["inf,,NA,a", "1,,?,b", "2,,,a"]
    with pytest.raises(TrainingError) as caught:
        _load(tmp_path, _csv("big,empty,text,y", rows))
    message = str(caught.value)
    assert "feature column 'big' has infinite values" in message
    assert "feature column 'empty' has no values" in message
    assert "feature column 'text' has no values" in message


def test_every_option_problem_is_reported_at_once(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    options = Options(
        artifacts=artifacts,
        name="no/slash",
        test_size=0.7,
        epochs=0,
        threshold="often",
        class_weight="heavy",
        features=["petal_width", "stem"],
        quiet=True,
    )
    with pytest.raises(TrainingError) as caught:
        run(options)
    message = str(caught.value)
    for fragment in (
        "model name 'no/slash'",
        "--test-size must be between 0 and 0.5, got 0.7",
        "--epochs must be at least 1, got 0",
        "--threshold must be 'f1' or a number in (0, 1), got 'often'",
        "--class-weight must be auto, balanced or none, got 'heavy'",
        "--features names unknown column 'stem'",
    ):
        assert fragment in message
    assert not artifacts.exists()


@pytest.mark.parametrize("threshold", ["f1", "0.3"])
def test_threshold_on_a_multiclass_target_exits_2(
    tmp_path: Path, threshold: str, capsys: pytest.CaptureFixture[str]
) -> None:
    artifacts = tmp_path / "artifacts"
    code = main(["--threshold", threshold, "--artifacts", str(artifacts), "--quiet"])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "training: error: --threshold applies to a binary target; this one has 3 classes\n"
    )
    assert not artifacts.exists()


# --- specs fitted on the training split ---------------------------------------------------------


def _mixed(tmp_path: Path) -> data.Dataset:
    rows = [
        "1,true,x,a",
        ",false,x,b",
        "3,,y,a",
        "4,true,,b",
        "5,false,y,a",
        "6,true,z,b",
        "100,false,w,a",
        "200,true,w,b",
    ]
    return _load(tmp_path, _csv("n,flag,cat,y", rows))


def test_specs_come_from_the_training_split_only(tmp_path: Path) -> None:
    dataset = _mixed(tmp_path)
    train = np.arange(6)  # the last two rows (100, 200; "w") are not training rows
    numeric, flag, category = features.fit_specs(dataset, train)

    assert (numeric.kind, numeric.min, numeric.max) == ("numeric", 1.0, 6.0)
    assert numeric.mean == pytest.approx(3.8)
    assert numeric.median == 4.0
    assert (numeric.nullable, numeric.missing) == (True, 1)

    assert flag.kind == "boolean"
    assert flag.vocabulary == columns.BOOLEAN_VOCABULARY
    assert flag.mean == pytest.approx(0.6)
    assert flag.median == 1.0  # the commoner value
    assert (flag.nullable, flag.missing) == (True, 1)

    assert category.kind == "categorical"
    # x and y twice; z once (rare, the unseen bucket); w never in training; the one blank kept.
    assert category.vocabulary == ["", "x", "y"]
    assert (category.nullable, category.missing) == (True, 1)
    assert category.min is None and category.median is None


def test_encode_follows_bundle_columns(tmp_path: Path) -> None:
    dataset = _mixed(tmp_path)
    specs = features.fit_specs(dataset, np.arange(6))
    x = features.encode(dataset, specs)
    assert x.dtype == np.float32
    assert x.shape == (8, 3)
    np.testing.assert_array_equal(x[:, 0], [1, np.nan, 3, 4, 5, 6, 100, 200])
    np.testing.assert_array_equal(x[:, 1], [1, 0, np.nan, 1, 0, 1, 0, 1])
    # vocabulary ["", "x", "y"]: blank 1, x 2, y 3, z and w unseen 0
    assert x[:, 2].tolist() == [2, 2, 3, 1, 3, 0, 0, 0]
    expected = columns.encode_categories(
        _column(dataset, "cat").values.tolist(), specs[2].vocabulary
    )
    np.testing.assert_array_equal(x[:, 2], expected)


def test_raw_rows_and_inputs_carry_raw_values(tmp_path: Path) -> None:
    dataset = _mixed(tmp_path)
    rows = features.raw_rows(dataset, np.array([0, 1, 2, 3]))
    assert rows == [[1.0, True, "x"], [None, False, "x"], [3.0, None, "y"], [4.0, True, None]]
    assert type(rows[0][1]) is bool
    raw = features.raw_inputs(dataset, np.array([1, 3]))
    assert raw["n"].dtype == np.float32 and np.isnan(raw["n"][0])
    assert raw["flag"].tolist() == [0.0, 1.0]
    assert raw["cat"].tolist() == ["x", ""]


# --- decisions, thresholds and the report --------------------------------------------------------


PROBABILITIES = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8], [0.65, 0.35]])


def test_decide_is_argmax_or_the_threshold() -> None:
    assert evaluate.decide(PROBABILITIES, None).tolist() == [0, 1, 0, 1, 0]
    assert evaluate.decide(PROBABILITIES, 0.3).tolist() == [0, 1, 1, 1, 1]
    assert evaluate.decide(PROBABILITIES, 0.35).tolist() == [0, 1, 0, 1, 1]  # at or above
    assert evaluate.decide(PROBABILITIES, 0.7).tolist() == [0, 0, 0, 1, 0]
    three = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    assert evaluate.decide(three, None).tolist() == [2, 0]


def test_choose_threshold_f1_picks_the_best_on_validation() -> None:
    y = np.array([0, 1, 1, 1, 0])
    threshold = evaluate.choose_threshold("f1", y, PROBABILITIES)
    assert threshold == pytest.approx(0.3)  # catches every 1; 0.35 would add a false positive
    predicted = evaluate.decide(PROBABILITIES, threshold)
    assert predicted.tolist() == [0, 1, 1, 1, 1]


@pytest.mark.parametrize(
    ("option", "expected"), [("0.3", 0.3), ("0.5", 0.5), (".25", 0.25), ("1e-1", 0.1)]
)
def test_choose_threshold_numbers(option: str, expected: float) -> None:
    assert evaluate.choose_threshold(option, np.zeros(0), np.zeros((0, 2))) == expected


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("0", "between 0 and 1, got 0"),
        ("1", "between 0 and 1, got 1"),
        ("-0.2", "between 0 and 1"),
        ("nan", "between 0 and 1"),
        ("F1", "'f1' or a number"),
        ("", "'f1' or a number"),
    ],
)
def test_choose_threshold_refuses(option: str, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        evaluate.choose_threshold(option, np.zeros(0), np.zeros((0, 2)))


def test_binary_metrics_have_baseline_and_aucs() -> None:
    y = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    p1 = np.array([0.1, 0.2, 0.6, 0.7, 0.9, 0.3, 0.4, 0.2])
    probabilities = np.stack([1 - p1, p1], axis=1)
    metrics = evaluate.compute(
        y, evaluate.decide(probabilities, 0.65), ["no", "yes"], probabilities, 0.65
    )
    assert metrics["accuracy"] == 1.0
    assert metrics["baseline_accuracy"] == 0.75
    assert metrics["baseline_label"] == "no"
    assert metrics["roc_auc"] == 1.0
    assert metrics["pr_auc"] == pytest.approx(1.0)
    assert (metrics["positive_class"], metrics["threshold"]) == ("yes", 0.65)
    table = evaluate.format_table(metrics)
    assert "majority-class baseline 0.7500: always 'no'" in table
    assert "ROC AUC 1.0000, PR AUC 1.0000 (positive class 'yes', threshold 0.65)" in table
    assert "does not beat" not in table


def test_binary_metrics_default_threshold_and_a_weak_model() -> None:
    y = np.array([0, 0, 0, 1])
    probabilities = np.array([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.55, 0.45]])
    metrics = evaluate.compute(y, evaluate.decide(probabilities, None), [0, 1], probabilities)
    assert metrics["threshold"] == 0.5
    assert metrics["accuracy"] == 0.5 < metrics["baseline_accuracy"] == 0.75
    assert metrics["roc_auc"] == pytest.approx(2 / 3)
    table = evaluate.format_table(metrics)
    assert "note: accuracy does not beat always answering the majority class" in table
    assert "and ROC AUC" in table


def test_multiclass_metrics_have_a_baseline_and_no_auc() -> None:
    y = np.array([0, 1, 2, 2, 2])
    probabilities = np.eye(3)[[0, 1, 2, 2, 1]]
    metrics = evaluate.compute(y, probabilities.argmax(axis=1), ["a", "b", "c"], probabilities)
    assert metrics["baseline_accuracy"] == 0.6
    assert metrics["baseline_label"] == "c"
    assert "roc_auc" not in metrics and "pr_auc" not in metrics and "threshold" not in metrics
    assert "ROC AUC" not in evaluate.format_table(metrics)


# --- class weights ---------------------------------------------------------------------------------


def test_class_weight_auto_balances_a_rare_class_only() -> None:
    rare = np.array([1] * 5 + [0] * 95)  # 5% positive
    even = np.array([1] * 50 + [0] * 50)
    assert class_weight_mode("auto", rare, 2) == "balanced"
    assert class_weight_mode("auto", even, 2) == "none"
    # The rarest class under a tenth of the commonest one's rows: balanced.
    assert class_weight_mode("auto", np.array([0] * 40 + [1] * 30 + [2] * 4), 3) == "none"
    assert class_weight_mode("auto", np.array([0] * 40 + [1] * 30 + [2] * 3), 3) == "balanced"
    assert class_weight_mode("auto", np.array([1] * 15 + [0] * 85), 2) == "none"  # 15% positive
    assert class_weight_mode("none", rare, 2) == "none"
    assert class_weight_mode("balanced", even, 2) == "balanced"
    with pytest.raises(TrainingError, match="--class-weight must be auto, balanced or none"):
        class_weight_mode("inverse", even, 2)


def test_categorical_must_name_a_feature(tmp_path: Path) -> None:
    rows = ["1,02134,3,a", "2,02139,4,b"]
    text = _csv("x,zip,w,y", rows)
    with pytest.raises(TrainingError, match=r"--categorical names 'zip', not in --features"):
        _load(tmp_path, text, features=["x"], categorical=["zip"])
    with pytest.raises(TrainingError, match=r"'w' is in both --categorical and --exclude"):
        _load(tmp_path, text, categorical=["w"], exclude=["w"])


def test_columns_not_named_in_features_are_recorded_as_left_out(tmp_path: Path) -> None:
    rows = ["1,5,red,a", "2,6,blue,b", "3,4,red,a"]
    dataset = _load(tmp_path, _csv("x,w,colour,y", rows), features=["w"], exclude=["colour"])
    assert dataset.features == ["w"]
    assert dataset.left_out == {"colour": "--exclude", "x": "not in --features"}
