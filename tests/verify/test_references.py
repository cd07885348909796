"""webbuild.verify.references: the weights check and how unavailable references are reported."""

from __future__ import annotations

import json

import numpy as np

from webbuild.site_format import Manifest, Variant, write_manifest
from webbuild.verify.references import compare_weights, resolve_source


def test_the_weights_check_names_each_tensor_that_differs() -> None:
    fresh = {"a.q_weight": np.arange(8, dtype=np.uint32), "a.q_scale": np.ones(2, np.float32), "b": np.zeros(3)}
    bundle = {"a.q_weight": fresh["a.q_weight"].copy(), "a.q_scale": np.array([1, 1.5], np.float32), "b": np.zeros(4)}
    check = compare_weights(bundle, fresh)
    assert check.compared == 3
    assert check.differing == [("a.q_scale", 0.5), ("b", float("inf"))]
    assert json.dumps(check.as_dict(), allow_nan=False)  # a shape mismatch is null, not Infinity
    assert compare_weights(fresh, fresh).differing == []


def test_a_site_whose_model_is_not_a_preset_has_no_source_and_says_how_to_give_one(tmp_path) -> None:
    variant = Variant("my-local-model-q4f32_1", "q4f32_1", False, 64)
    write_manifest(tmp_path, Manifest("my-local-model", "2026-12-02T00:00:00+00:00", variant.id, [variant], []))
    source, note = resolve_source(tmp_path, None)
    assert source is None
    assert "my-local-model" in note and "--source" in note
