import numpy as np
import pytest
import torch

from histoxai.data.store import MASK_CLASSES
from histoxai.xai_eval.tissue import (
    TISSUE_CLASSES,
    binned_shares,
    class_shares,
    labels_from_colour,
    labels_from_masks,
)


def test_mask_labels_map_to_tissue_classes():
    masks = np.array([[[MASK_CLASSES.index(c) for c in MASK_CLASSES]]], dtype=np.uint8)
    labels = labels_from_masks(masks)
    assert [TISSUE_CLASSES[i] for i in labels[0, 0].tolist()] == list(MASK_CLASSES)
    with pytest.raises(ValueError, match="mask labels must be 0..3"):
        labels_from_masks(np.full((1, 2, 2), 7, dtype=np.uint8))


def test_colour_deconvolution_finds_nuclei_stroma_and_air():
    image = np.zeros((1, 24, 24, 3), dtype=np.uint8)
    image[0, :, :12] = (235, 150, 200)  # eosin-pink stroma
    image[0, 6:12, 2:8] = (70, 40, 140)  # haematoxylin-purple nucleus
    image[0, :, 12:] = (245, 245, 245)  # air
    labels = labels_from_colour(image)[0]
    name = {i: c for i, c in enumerate(TISSUE_CLASSES)}
    assert name[int(labels[8, 4])] == "nuclei"
    assert name[int(labels[20, 4])] == "stroma"
    assert name[int(labels[8, 20])] == "air"


def test_class_shares_of_a_map_on_nuclei_only():
    labels = torch.tensor([[[0, 0, 1, 2]]])  # nuclei, nuclei, stroma, air
    maps = torch.tensor([[[1.0, 3.0, -2.0, 0.0]]])
    share, area = class_shares(maps, labels)
    assert share[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    assert area[0].tolist() == pytest.approx([0.5, 0.25, 0.25, 0.0])


def test_binned_shares_average_within_quantile_bins():
    shares = np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 1.0, 0, 0]])
    table = binned_shares(shares, np.array([0.1, 0.2, 0.8, 0.9]), n_bins=2, label="md_bin")
    assert list(table["n"]) == [2, 2]
    assert list(table["nuclei"]) == [1.0, 0.0] and list(table["stroma"]) == [0.0, 1.0]
    assert binned_shares(shares, np.full(4, np.nan)).empty


def test_colour_labels_agree_with_the_phantom_masks():
    from histoxai.config import PhantomConfig
    from histoxai.data.phantom import generate_phantom

    (block,), _ = generate_phantom(PhantomConfig(n_samples=1, grid_vox=(3, 3), distractors=False), 32, 0)
    colour = labels_from_colour(block.images).numpy()
    truth = labels_from_masks(block.masks).numpy()
    assert (colour == truth).mean() > 0.95
