import pytest
import torch

from noisyft.backbones import create_backbone
from noisyft.backbones.efficientnet import load_by_position
from noisyft.errors import UserError


def test_packaged_efficientnet_lite0_loads_strictly_with_its_preprocessing():
    b = create_backbone("efficientnet_lite0", image_size=64)
    assert b.num_features == 1280
    assert b.preprocess.mean == (0.5, 0.5, 0.5) and b.preprocess.std == (0.5, 0.5, 0.5)
    assert b.preprocess.size == 64
    assert b.weights_id.startswith("efficientnet_lite0:") and not b.weights_id.endswith("random")
    rand = create_backbone("efficientnet_lite0", pretrained=False, image_size=64)
    w, r = b.model.conv_stem.weight, rand.model.conv_stem.weight
    assert not torch.equal(w, r)  # the packaged weights were really loaded
    with torch.no_grad():
        assert b.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 1280)


def test_load_by_position_rejects_a_shape_mismatch():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="does not fit"):
        load_by_position(model, {"a": torch.zeros(4, 4), "b": torch.zeros(4)})


def test_timm_tiny_model_by_name():
    b = create_backbone("test_vit", pretrained=False, image_size=32)
    assert b.family == "vit" and b.num_features == 64
    assert b(torch.zeros(1, 3, 32, 32)).shape == (1, 64)


def test_unknown_backbone_suggests_nearest_names():
    with pytest.raises(UserError, match="did you mean efficientnet_lite"):
        create_backbone("efficientnet_lite9")


def test_hub_model_offline_fails_with_one_line_naming_it():
    with pytest.raises(UserError) as e:
        create_backbone("google/vit-base-patch16-224")
    msg = str(e.value)
    assert "google/vit-base-patch16-224" in msg and "\n" not in msg


@pytest.mark.parametrize("kind", ["vit", "clip", "convnext"])
def test_hf_model_from_a_local_directory(tmp_path, kind):
    import transformers as tf

    if kind == "vit":
        cfg = tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
        model, dim = tf.ViTModel(cfg), 32
    elif kind == "clip":
        cfg = tf.CLIPConfig(text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
                            vision_config=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                               image_size=32, patch_size=8), projection_dim=16)
        model, dim = tf.CLIPModel(cfg), 48
    else:
        cfg = tf.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=32)
        model, dim = tf.ConvNextModel(cfg), 32
    model.save_pretrained(tmp_path / kind)
    b = create_backbone(str(tmp_path / kind), image_size=32)
    assert b.num_features == dim
    assert b.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, dim)
    assert b.family == {"vit": "vit", "clip": "clip", "convnext": "convnext"}[kind]
