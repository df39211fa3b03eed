"""Sharing metrics, the overlap search and the embeddings on features whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from mtdqn.analysis.config import AnalysisConfig
from mtdqn.analysis.embed import embed, pca
from mtdqn.analysis.metrics import (
    bf16_signal,
    effective_rank,
    knn_mixing,
    layer_activity,
    linear_cka,
    neighbours,
    sharing_metrics,
    task_probe,
    unit_usage,
    value_readouts,
)
from mtdqn.analysis.overlap import overlap_states


def two_clusters(n=100, gap=10.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n, 5))
    x[n:, 0] += gap
    return x, np.repeat([0, 1], n)


def test_effective_rank_counts_equal_directions_exactly():
    x = np.zeros((8, 6))
    x[:4, :3] = np.eye(4)[:, :3] * 2.0
    x[4:, :3] = -np.eye(4)[:, :3] * 2.0  # centred already; three directions of equal spread
    assert effective_rank(x) == pytest.approx(3.0, abs=1e-9)
    assert effective_rank(np.ones((5, 4))) == 0.0  # constant features use no direction


def test_cka_is_one_under_rotation_and_scale_and_small_for_unrelated_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, rng.normal(size=(500, 8))) < 0.05


def test_unit_usage_on_hand_made_units():
    task = np.repeat([0, 1], 4)
    x = np.zeros((8, 4))
    x[:, 0] = 0.5  # dead
    x[:4, 1] = [0.0, 1.0, 0.0, 1.0]  # varies in task 0 only
    x[:, 2] = task  # encodes the task: all its variance is between tasks
    x[:, 3] = [0, 1, 0, 1, 0, 1, 0, 1]  # varies inside both tasks, same mean
    usage = unit_usage(x, task)
    assert usage["dead_unit_fraction"] == 0.25
    # unit 1: between-task variance 0.0625 of total 0.1875 -> 1/3; unit 2: 1; unit 3: 0
    assert usage["task_variance_fraction"] == pytest.approx((1 / 3 + 1.0 + 0.0) / 3)
    assert usage["task_exclusive_unit_fraction"] == pytest.approx(1 / 3)  # unit 1 of the live 1, 2, 3


def test_layer_activity_on_hand_made_layers():
    a = np.array([[0.5, 0.0, 0.995], [0.5, 1.0, 0.999]])  # unit 0 dead; units 1, 2 live; 4 of 6 saturated
    b = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])  # all dead, none saturated
    relu = np.array([[0.0, 2.0], [0.0, 3.0]])
    out = layer_activity([("1: sig", "sigmoid", [a, b]), ("2: relu", "relu", [relu, relu])], ["A", "B"])
    assert out["1: sig"] == {"A": {"dead": 0.3333, "saturated": 0.6667}, "B": {"dead": 1.0, "saturated": 0.0}}
    assert out["2: relu"] == {"A": {"dead": 0.5}, "B": {"dead": 0.5}}  # no saturation for non-sigmoids


def test_bf16_signal_is_the_median_correlation_of_exact_and_rounded_outputs():
    exact = np.array([[0.0, 1.0, 5.0, 2.0], [1.0, 3.0, 5.0, 2.0], [2.0, 2.0, 5.0, 2.0]])
    # units: two varying (correlation 1) and two constant (0)
    assert bf16_signal(exact, exact.astype(np.float32)) == pytest.approx(0.5, abs=1e-12)
    rounded = exact.copy()
    rounded[:, 3] = [0.0, 1.0, 2.0]  # the constant unit varies after rounding: still 0 (exact is constant)
    rounded[:, 1] = [3.0, 1.0, 2.0]  # the second unit's variation reversed: -1
    # units: 1.0, -1.0, 0.0 (constant), 0.0 -> median 0.0; without the constant ones: 1 and -1
    assert bf16_signal(exact, rounded) == pytest.approx(0.0, abs=1e-12)
    assert bf16_signal(exact[:, :2], exact[:, :2]) == pytest.approx(1.0, abs=1e-12)
    assert bf16_signal(exact[:, :2], rounded[:, :2]) == pytest.approx(0.0, abs=1e-12)  # median of 1 and -1
    scaled = 2.0 * exact[:, :1] + 3.0  # scale and offset do not matter
    assert bf16_signal(exact[:, :1], scaled) == pytest.approx(1.0, abs=1e-12)
    a = np.array([[0.2, 0.9], [0.4, 0.1]])
    flat = [("1: sig", "sigmoid", [a * 0 + 0.5])]
    out = layer_activity([("1: sig", "sigmoid", [a])], ["A"], bf16_layers=flat)
    assert out["1: sig"]["A"]["bf16_signal"] == 0.0  # rounding flattened both units


def test_separated_tasks_give_perfect_probe_and_no_mixing():
    x, task = two_clusters()
    accuracy, chance = task_probe(x, task, folds=5, seed=0)
    assert accuracy == 1.0 and chance == 0.5
    nn, _ = neighbours(x, 10)
    mixing, overlap = knn_mixing(nn, task, seed=0)
    assert mixing == 0.0 and overlap == 0.0


def test_identical_task_distributions_mix_like_random_labels():
    x, task = two_clusters(n=300, gap=0.0)
    nn, _ = neighbours(x, 10)
    mixing, overlap = knn_mixing(nn, task, seed=0)
    assert 0.85 < mixing < 1.15
    assert overlap > 0.95
    accuracy, _ = task_probe(x, task, folds=5, seed=0)
    assert accuracy < 0.62


def test_value_readouts_find_a_shared_value_direction():
    rng = np.random.default_rng(2)
    task = np.repeat([0, 1], 200)
    x = rng.normal(size=(400, 6))
    value = 3.0 * x[:, 0] + np.where(task == 1, 50.0, -20.0)  # one direction, task-specific offsets
    out = value_readouts(x, value, task, folds=5, seed=0)
    assert out["value_r2_joint"] > 0.99 and out["value_r2_per_task"] > 0.99
    assert np.all(np.asarray(out["value_r2_cross"]) > 0.99)
    value_b = np.where(task == 0, x[:, 0], x[:, 1])  # task 1's value lives on another direction
    cross = np.asarray(value_readouts(x, value_b, task, folds=5, seed=0)["value_r2_cross"])
    assert cross[0, 0] > 0.99 and cross[1, 1] > 0.99
    assert cross[1, 0] < 0.05 and cross[0, 1] < 0.05


def test_overlap_search_ranks_a_state_inside_another_tasks_cluster_first():
    x, task = two_clusters(n=50, gap=20.0)
    x[3] = x[60] + 0.01  # a task-0 state right next to a task-1 state
    nn, _ = neighbours(x, 5)
    found = overlap_states(x, task, nn, per_pair=2)
    top = found[(0, 1)][0]
    assert (top.row, top.task, top.other, top.partner) == (3, 0, 1, 60)
    assert top.foreign_fraction == 1.0
    assert top.distance == pytest.approx(0.01 * np.sqrt(5))
    assert len(found[(0, 1)]) == 2 and found[(0, 1)][1].row != 3


def test_overlap_search_returns_the_closest_pairs_when_no_neighbour_is_foreign():
    x, task = two_clusters(n=40, gap=50.0)
    nn, _ = neighbours(x, 5)
    found = overlap_states(x, task, nn, per_pair=3)[(0, 1)]
    assert len(found) == 3 and all(item.foreign_fraction == 0.0 for item in found)
    d = np.linalg.norm(x[task == 0][:, None] - x[task == 1][None], axis=-1)
    assert found[0].distance == pytest.approx(d.min())
    assert len({item.row for item in found}) == 3


def test_sharing_metrics_bundle_is_json_ready():
    x, task = two_clusters(n=60)
    metrics, nn = sharing_metrics(x, task, x[:, 1], k=5, folds=3, seed=0)
    assert nn.shape == (120, 5)
    assert isinstance(metrics["value_r2_cross"], list) and len(metrics["effective_rank_per_task"]) == 2


def test_pca_recovers_the_principal_axes_with_fixed_signs():
    rng = np.random.default_rng(3)
    x = np.zeros((200, 3))
    x[:, 1] = rng.normal(size=200) * 5.0
    x[:, 2] = rng.normal(size=200) * 1.0
    emb = pca(x)
    np.testing.assert_allclose(np.abs(emb[:, 0]), np.abs(x[:, 1] - x[:, 1].mean()), atol=0.3)
    np.testing.assert_allclose(pca(x), pca(x.copy()))


def test_tsne_is_reproducible_and_keeps_clusters_apart():
    x, task = two_clusters(n=100)
    cfg = AnalysisConfig(perplexity=15, tsne_iterations=100)
    a, b = embed(x, cfg, seed=7), embed(x, cfg, seed=7)
    np.testing.assert_array_equal(a, b)
    nn, _ = neighbours(a, 5)  # clusters stay apart in the picture too
    assert (task[nn] == task[:, None]).mean() > 0.99
