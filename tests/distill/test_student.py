"""student_from_teacher: a shallower BERT whose kept layers are bit-equal copies."""

from __future__ import annotations

import pytest
import torch

from tests.distill.conftest import cnn
from transferkit.backbones.base import Backbone
from transferkit.distill import kept_layers, student_from_teacher
from transferkit.errors import BackboneError, ConfigError


def test_every_second_layer_is_copied_bit_equal(bert_teacher: Backbone) -> None:
    teacher = bert_teacher
    student = student_from_teacher(teacher, keep_every=2)
    assert student.model.config.num_hidden_layers == 2
    assert teacher.model.config.num_hidden_layers == 4  # the teacher's config is untouched
    assert len(student.layer_groups()) == 3 and student.num_features == 32
    t_state, s_state = teacher.model.state_dict(), student.model.state_dict()
    for key, value in s_state.items():
        src = key
        if key.startswith("encoder.layer."):
            j, rest = key[len("encoder.layer.") :].split(".", 1)
            src = f"encoder.layer.{[1, 3][int(j)]}.{rest}"
        assert torch.equal(value, t_state[src]), key
    assert student.init_kwargs["config"]["num_hidden_layers"] == 2  # file: reload works
    x = student.prepare(["good movie", "awful boring plot actor"])
    student.eval()
    assert student(x).shape == (2, 32)
    assert (
        student.prepare(["good"])["input_ids"].tolist()
        == teacher.prepare(["good"])["input_ids"].tolist()
    )


def test_keep_every_one_reproduces_the_teacher(bert_teacher: Backbone) -> None:
    same = student_from_teacher(bert_teacher, keep_every=1).eval()
    bert_teacher.eval()
    x = bert_teacher.prepare(["fun film", "bad"])
    with torch.no_grad():
        torch.testing.assert_close(same(x), bert_teacher(x))


def test_layer_choice_and_errors() -> None:
    assert kept_layers(6, 2) == [1, 3, 5]
    assert kept_layers(6, 3) == [2, 5]
    assert kept_layers(5, 2) == [1, 3]
    assert kept_layers(6, 2, layers=[0, 5]) == [0, 5]
    with pytest.raises(ConfigError, match="keep_every"):
        kept_layers(4, 0)
    with pytest.raises(ConfigError, match="increasing"):
        kept_layers(4, 2, layers=[2, 1])
    with pytest.raises(BackboneError, match="Hugging Face"):
        student_from_teacher(cnn(4, 2))


@pytest.mark.integration
def test_half_depth_student_of_the_packaged_minilm() -> None:
    from transferkit.backbones import create_backbone

    teacher = create_backbone("packaged:minilm-l6").eval()
    student = student_from_teacher(teacher, keep_every=2).eval()
    layer = sum(p.numel() for p in teacher.model.encoder.layer[0].parameters())
    n_t = sum(p.numel() for p in teacher.parameters())
    assert sum(p.numel() for p in student.parameters()) == n_t - 3 * layer
    for j, i in enumerate([1, 3, 5]):
        for a, b in zip(
            student.model.encoder.layer[j].parameters(),
            teacher.model.encoder.layer[i].parameters(),
            strict=True,
        ):
            assert torch.equal(a, b)
    x = teacher.prepare(["a delightful film", "a dull, boring plot"])
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(student(x), teacher(x))
    assert student(x).shape == (2, 384) and bool((cos > 0.3).all())
