"""DETR's set criterion and Hungarian matcher, pinned to numbers worked out by hand from the paper's formulas
(Carion et al. 2020, eq. 1-2 and appendix A.1) on imperfect predictions with several targets."""

import itertools

import pytest
import torch
import torch.distributed as dist

from vision_attn.losses import HungarianMatcher, SetCriterion

K = 3  # object classes; class 3 is "no object"

# Three images: two targets, one target, none. Boxes are normalised (cx, cy, w, h).
TARGETS = [
    {"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.1, 0.1]])},
    {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.7, 0.3, 0.2, 0.4]])},
    {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
]
BOXES = torch.tensor(
    [
        [[0.25, 0.3, 0.1, 0.1], [0.55, 0.5, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]],  # q0 ~ target 1, q1 ~ target 0
        [[0.1, 0.9, 0.1, 0.1], [0.75, 0.35, 0.2, 0.3], [0.3, 0.7, 0.1, 0.1]],  # q1 ~ target 0
        [[0.5, 0.5, 0.3, 0.3], [0.2, 0.8, 0.1, 0.2], [0.6, 0.4, 0.2, 0.1]],
    ]
)
LOGITS = torch.tensor(
    [
        [[2.0, 0.5, -1.0, 0.0], [0.0, 1.5, 1.0, -0.5], [-1.0, 0.0, 0.5, 2.5]],  # right, wrong (1 for 2), empty
        [[0.0, 1.2, 0.3, 1.0], [0.2, 2.0, -0.3, 0.1], [0.1, -0.2, 0.0, 1.5]],  # a false positive, right, empty
        [[0.3, 0.1, 1.1, 0.9], [0.0, 0.2, 0.1, 1.0], [0.5, 0.0, 0.2, 1.5]],  # a false positive, empty, empty
    ]
)
MATCH = [([0, 1], [1, 0]), ([1], [0]), ([], [])]  # (query, target) pairs per image
TARGET_CLASSES = torch.tensor([[0, 2, 3], [3, 1, 3], [3, 3, 3]])  # what each query is trained towards

# By hand: L1 of the matched pairs 0.05, 0.05, 0.2; GIoU = IoU - (C - U) / C:
#   image 0, q0/target 1: overlap 0.1 x 0.05 = 0.005, union 0.015, enclosing 0.015 -> 1/3
#   image 0, q1/target 0: overlap 0.15 x 0.2 = 0.03, union 0.05, enclosing 0.05 -> 0.6
#   image 1, q1/target 0: overlap 0.15 x 0.3 = 0.045, union 0.095, enclosing 0.25 x 0.4 = 0.1 -> 9/19 - 0.05
NUM_BOXES = 3
L1_SUM = 0.05 + 0.05 + 0.2
ONE_MINUS_GIOU_SUM = (1 - 1 / 3) + (1 - 0.6) + (1 - (9 / 19 - 0.05))
CLASS_ERROR = 100 - 100 * 2 / 3  # 2 of the 3 matched queries have the right top-1 class
CARDINALITY_ERROR = (0 + 1 + 1) / 3  # non-empty predictions: 2, 2, 1 against 2, 1, 0 targets


def weighted_ce(logits, target_classes, eos_coef):
    """Eq. (2)'s class term as DETR trains it: -w_c log p(c), averaged with weights w = 1, "no object" eos_coef."""
    w = torch.ones(K + 1, dtype=torch.float64)
    w[K] = eos_coef
    nll = -logits.double().log_softmax(-1).gather(-1, target_classes[..., None])[..., 0]
    weights = w[target_classes]
    return float((weights * nll).sum() / weights.sum())


def _outputs(aux=()):
    out = {"pred_logits": LOGITS.clone(), "pred_boxes": BOXES.clone()}
    out["aux_outputs"] = [{"pred_logits": LOGITS * s, "pred_boxes": BOXES.clone()} for s in aux]
    return out


def test_the_matcher_pairs_each_target_with_its_nearest_query():
    indices = HungarianMatcher()(_outputs(), TARGETS)
    assert [(q.tolist(), t.tolist()) for q, t in indices] == MATCH
    assert all(q.dtype == t.dtype == torch.int64 for q, t in indices)


@pytest.mark.parametrize("eos_coef", [0.1, 0.5])
def test_losses_equal_the_hand_computed_values(eos_coef):
    losses = SetCriterion(K, eos_coef=eos_coef, aux_loss=False)(_outputs(), TARGETS)
    assert float(losses["loss_bbox"]) == pytest.approx(L1_SUM / NUM_BOXES, rel=1e-5)
    assert float(losses["loss_giou"]) == pytest.approx(ONE_MINUS_GIOU_SUM / NUM_BOXES, rel=1e-5)
    assert float(losses["loss_ce"]) == pytest.approx(weighted_ce(LOGITS, TARGET_CLASSES, eos_coef), rel=1e-5)
    assert float(losses["class_error"]) == pytest.approx(CLASS_ERROR, rel=1e-5)
    assert float(losses["cardinality_error"]) == pytest.approx(CARDINALITY_ERROR, rel=1e-5)
    expected = 1 * losses["loss_ce"] + 5 * losses["loss_bbox"] + 2 * losses["loss_giou"]  # DETR's weights
    assert float(losses["loss"]) == pytest.approx(float(expected), rel=1e-6)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "class_error", "cardinality_error", "loss"}
    assert all(v.dtype == torch.float32 for v in losses.values())


def test_the_no_object_weight_is_on_the_last_class_only():
    crit = SetCriterion(K, eos_coef=0.25)
    assert crit.empty_weight.tolist() == [1.0, 1.0, 1.0, 0.25] and crit.eos_coef == 0.25
    # a confident wrong "no object" on unmatched queries costs eos_coef times a wrong object class
    logits = torch.zeros(1, 2, K + 1)
    logits[0, :, 0] = 5.0
    one = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    ce = crit({"pred_logits": logits, "pred_boxes": boxes}, one)["loss_ce"]
    assert float(ce) == pytest.approx(weighted_ce(logits, torch.tensor([[0, 3]]), 0.25), rel=1e-6)


def test_aux_layers_use_the_same_formulas_weights_and_num_boxes():
    losses = SetCriterion(K, eos_coef=0.1)(_outputs(aux=(0.5, 2.0)), TARGETS)
    for i, s in enumerate((0.5, 2.0)):
        assert float(losses[f"loss_ce_{i}"]) == pytest.approx(weighted_ce(LOGITS * s, TARGET_CLASSES, 0.1), rel=1e-5)
        assert float(losses[f"loss_bbox_{i}"]) == pytest.approx(L1_SUM / NUM_BOXES, rel=1e-5)
        assert float(losses[f"loss_giou_{i}"]) == pytest.approx(ONE_MINUS_GIOU_SUM / NUM_BOXES, rel=1e-5)
    assert "class_error_0" not in losses and "cardinality_error_1" not in losses  # logs: final layer only
    total = sum(
        w * sum(float(losses[k + sfx]) for sfx in ("", "_0", "_1"))
        for k, w in (("loss_ce", 1), ("loss_bbox", 5), ("loss_giou", 2))
    )
    assert float(losses["loss"]) == pytest.approx(total, rel=1e-6)
    no_aux = SetCriterion(K, aux_loss=False)(_outputs(aux=(0.5,)), TARGETS)
    assert "loss_ce_0" not in no_aux


def test_custom_weights_and_unknown_names():
    losses = SetCriterion(K, weight_dict={"loss_ce": 2.0, "loss_giou": 0.5}, aux_loss=False)(_outputs(), TARGETS)
    assert float(losses["loss"]) == pytest.approx(float(2 * losses["loss_ce"] + 0.5 * losses["loss_giou"]), rel=1e-6)
    with pytest.raises(ValueError, match=r"unknown loss names \['loss_box'\]"):
        SetCriterion(K, weight_dict={"loss_box": 1.0})
    with pytest.raises(ValueError, match="num_classes must be >= 1; got 0"):
        SetCriterion(0)
    assert SetCriterion(1).empty_weight.tolist() == pytest.approx([1.0, 0.1])


def test_a_batch_without_objects_logs_zero_class_error_and_only_the_no_object_loss():
    empty = [TARGETS[2], TARGETS[2]]
    out = {"pred_logits": LOGITS[1:], "pred_boxes": BOXES[1:]}
    losses = SetCriterion(K)(out, empty)
    assert float(losses["class_error"]) == 0.0  # no matched query: nothing misclassified (DETR logs 100 here)
    assert float(losses["loss_bbox"]) == 0.0 and float(losses["loss_giou"]) == 0.0
    assert float(losses["loss_ce"]) == pytest.approx(weighted_ce(LOGITS[1:], torch.full((2, 3), K), 0.1), rel=1e-5)
    assert float(losses["cardinality_error"]) == pytest.approx((2 + 1) / 2)  # 2 and 1 non-empty predictions
    assert float(losses["loss"]) == pytest.approx(float(losses["loss_ce"]), rel=1e-6)


@pytest.mark.parametrize("bad", [[K], [0, K + 1], [-1]])
def test_labels_outside_the_classes_are_rejected(bad):
    targets = [TARGETS[1], {"labels": torch.tensor(bad), "boxes": torch.rand(len(bad), 4) * 0.5 + 0.25}, TARGETS[2]]
    with pytest.raises(ValueError, match=rf"target 1 has labels outside \[0, {K}\): \{bad}".replace(" ", r"\s*")):
        SetCriterion(K)(_outputs(), targets)
    ok = [TARGETS[1], {"labels": torch.tensor([0, K - 1]), "boxes": TARGETS[0]["boxes"]}, TARGETS[2]]
    assert torch.isfinite(SetCriterion(K)(_outputs(), ok)["loss"])


@pytest.mark.parametrize("local,other,expected", [(3, 5, 4.0), (3, 0, 1.5), (0, 1, 1.0), (0, 0, 1.0)])
def test_num_boxes_is_averaged_over_ddp_processes(monkeypatch, local, other, expected):
    """DETR: num_boxes = clamp(all_reduce(sum of target boxes) / world_size, min=1), here with a fake second rank."""
    calls = []

    def all_reduce(t, *args, **kwargs):
        calls.append(t.clone())
        t.add_(other)

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    targets = TARGETS if local == 3 else [TARGETS[2]] * 3
    crit = SetCriterion(K, aux_loss=False)
    assert crit.num_boxes(targets, torch.device("cpu")) == expected
    assert [float(c) for c in calls] == [local]
    if local:
        losses = crit(_outputs(), targets)
        assert float(losses["loss_bbox"]) == pytest.approx(L1_SUM / expected, rel=1e-5)
        assert float(losses["loss_giou"]) == pytest.approx(ONE_MINUS_GIOU_SUM / expected, rel=1e-5)


def test_bf16_outputs_under_autocast_give_float32_losses_of_the_same_value():
    out = {"pred_logits": LOGITS.bfloat16(), "pred_boxes": BOXES.bfloat16()}
    ref = SetCriterion(K, aux_loss=False)({k: v.float() for k, v in out.items()}, TARGETS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = SetCriterion(K, aux_loss=False)(out, TARGETS)
    for k, v in ref.items():
        assert losses[k].dtype == torch.float32 and float(losses[k]) == pytest.approx(float(v), rel=1e-6), k


# --- the matcher's costs ---------------------------------------------------------------------------------
def _giou(a, b):
    """GIoU of two (cx, cy, w, h) boxes, written out."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def test_giou_helper_reproduces_the_hand_values():
    assert _giou(BOXES[1, 1].tolist(), TARGETS[1]["boxes"][0].tolist()) == pytest.approx(9 / 19 - 0.05, rel=1e-5)


def test_default_matcher_costs_are_detrs_1_5_2_and_it_minimises_them():
    m = SetCriterion(K).matcher
    assert (m.cost_class, m.cost_bbox, m.cost_giou) == (1.0, 5.0, 2.0)
    assert "cost_class=1.0, cost_bbox=5.0, cost_giou=2.0" in repr(HungarianMatcher())
    g = torch.Generator().manual_seed(0)
    differs = 0
    for _trial in range(12):
        Q, n = 4, 3
        logits = torch.randn(1, Q, K + 1, generator=g) * 3
        boxes = torch.cat(
            [torch.rand(1, Q, 2, generator=g) * 0.6 + 0.2, torch.rand(1, Q, 2, generator=g) * 0.3 + 0.05], -1
        )
        labels = torch.randint(0, K, (n,), generator=g)
        tboxes = torch.cat([torch.rand(n, 2, generator=g) * 0.6 + 0.2, torch.rand(n, 2, generator=g) * 0.3 + 0.05], -1)
        prob = logits[0].softmax(-1)

        def best(wc, wb, wg):
            def cost(q, j):
                l1 = float((boxes[0, q] - tboxes[j]).abs().sum())
                return -wc * float(prob[q, labels[j]]) + wb * l1 - wg * _giou(boxes[0, q].tolist(), tboxes[j].tolist())

            return min(itertools.permutations(range(Q), n), key=lambda p: sum(cost(q, j) for j, q in enumerate(p)))

        ((rows, cols),) = m({"pred_logits": logits, "pred_boxes": boxes}, [{"labels": labels, "boxes": tboxes}])
        assert [int(q) for _, q in sorted(zip(cols.tolist(), rows.tolist()))] == list(best(1, 5, 2))
        differs += best(1, 5, 2) != best(2, 5, 2) or best(1, 5, 2) != best(1, 5, 3) or best(1, 5, 2) != best(1, 6, 2)
    assert differs >= 3  # the instances tell the weights apart


def test_matcher_arguments_are_checked():
    HungarianMatcher(0, 5, 2), HungarianMatcher(1, 0, 0), HungarianMatcher(0, 0, 2)
    with pytest.raises(ValueError, match="all costs are 0"):
        HungarianMatcher(0, 0, 0)
    with pytest.raises(ValueError, match="2 target dicts for a batch of 3 predictions"):
        HungarianMatcher()(_outputs(), TARGETS[:2])
