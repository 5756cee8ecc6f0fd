"""Inputs every family and the registry take: image shapes as strings, whole-number depths."""
import importlib
import re

import pytest

from mxcnn import common, symbols
from mxcnn.symbols import layers

FAMILIES = ["alexnet", "densenet", "googlenet", "inception_bn", "inception_v3", "inception_v4",
            "lenet", "mobilenet", "vgg", "resnet", "preact_resnet", "resnext", "wrn"]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_modules_take_a_string_image_shape(family):
    side = 299 if family.startswith("inception_v") else 32
    module = importlib.import_module("symbols." + family)
    from_string = module.get_symbol(num_classes=10, image_shape="3,%d,%d" % (side, side))
    from_tuple = module.get_symbol(num_classes=10, image_shape=(3, side, side))
    assert from_string.tojson() == from_tuple.tojson()


@pytest.mark.parametrize("bad", ["3,x,32", "3,,32,32", "3,32,32,", "a", (3, 32.5, 32), None])
def test_malformed_image_shapes_are_refused_as_given(bad):
    with pytest.raises(common.UserError,
                       match=r"image_shape %s is not of the form C,H,W" % re.escape(repr(bad))):
        layers.as_image_shape(bad)


def test_image_shape_spellings():
    for text in ("3,32,32", "3x32x32", " 3, 32 ,32"):
        assert layers.as_image_shape(text) == (3, 32, 32)
    with pytest.raises(common.UserError, match=r"got \(3, 32\)"):
        layers.as_image_shape("3,32")


@pytest.mark.parametrize("depth", [20.7, "20.5", True, "twenty"])
def test_non_integral_depths_are_refused(depth):
    with pytest.raises(common.UserError, match="num_layers must be a whole number"):
        symbols.get_symbol("resnet", num_layers=depth)


def test_whole_number_spellings_build_the_same_network():
    ref = symbols.get_symbol("resnet", num_layers=20).tojson()
    assert symbols.get_symbol("resnet", num_layers=20.0).tojson() == ref
    assert symbols.get_symbol("resnet", num_layers="20").tojson() == ref
    with pytest.raises(common.UserError, match="num_classes must be a whole number"):
        symbols.get_symbol("resnet", num_classes=10.5, num_layers=20)
