"""PatchCore and PaDiM: their maths against scipy/sklearn references, the coreset's covering property,
the backbone's weights (sha256-checked file, adapted first conv), and the methods' wiring."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy.ndimage import gaussian_filter as scipy_gaussian_filter
from scipy.spatial.distance import cdist, mahalanobis
from sklearn.neighbors import NearestNeighbors

import uadbench
from synthetic import brainlike_volumes
from uadbench.data import SliceDataset
from uadbench.errors import ConfigError
from uadbench.files import sha256_file
from uadbench.method import FitContext
from uadbench.methods.padim import GaussianAccumulator, mahalanobis_distances
from uadbench.methods.patchcore import greedy_coreset, knn_scores
from uadbench.nn.backbones import aggregate_patches, create_feature_backbone, load_backbone_state, read_weights_file

SHAPE = (32, 32)


# -- PaDiM: Gaussians and the Mahalanobis distance ----------------------------------------------------------
def test_gaussians_and_mahalanobis_match_numpy_and_scipy():
    rng = np.random.default_rng(0)
    n, p, d, eps = 40, 3, 5, 0.01
    data = rng.standard_normal((n, p, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)
    acc = GaussianAccumulator(p, d)
    for part in np.array_split(data, 4):  # accumulated over batches
        acc.update(torch.from_numpy(part))
    mean, cov = acc.mean_and_covariance(eps)
    queries = rng.standard_normal((6, p, d)) * 2
    dist = mahalanobis_distances(torch.from_numpy(queries), mean, torch.linalg.cholesky(cov))
    for pos in range(p):
        ref_cov = np.cov(data[:, pos], rowvar=False) + eps * np.eye(d)  # unbiased, as PaDiM
        np.testing.assert_allclose(mean[pos].numpy(), data[:, pos].mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cov[pos].numpy(), ref_cov, rtol=1e-9, atol=1e-12)
        vi = np.linalg.inv(ref_cov)
        for b in range(queries.shape[0]):
            expected = mahalanobis(queries[b, pos], data[:, pos].mean(0), vi)
            assert dist[b, pos].item() == pytest.approx(expected, rel=1e-8)


def test_mahalanobis_in_float32_stays_close_to_scipy():
    rng = np.random.default_rng(1)
    data = rng.random((200, 2, 8))
    acc = GaussianAccumulator(2, 8)
    acc.update(torch.from_numpy(data))
    mean, cov = acc.mean_and_covariance(0.01)
    x = rng.random((4, 2, 8))
    dist = mahalanobis_distances(torch.from_numpy(x).float(), mean.float(), torch.linalg.cholesky(cov).float())
    for b in range(4):
        for pos in range(2):
            ref = mahalanobis(x[b, pos], mean[pos].numpy(), np.linalg.inv(cov[pos].numpy()))
            assert dist[b, pos].item() == pytest.approx(ref, rel=1e-4)


# -- PatchCore: kNN score and coreset -----------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_knn_scores_match_sklearn(k):
    rng = np.random.default_rng(2)
    bank, queries = rng.standard_normal((300, 16)), rng.standard_normal((50, 16))
    ref, _ = NearestNeighbors(n_neighbors=k).fit(bank).kneighbors(queries)
    got = knn_scores(torch.from_numpy(queries), torch.from_numpy(bank), k, chunk_elements=300 * 7)  # several chunks
    np.testing.assert_allclose(got.numpy(), ref.mean(axis=1), rtol=1e-4, atol=1e-4)
    # a query that is a bank row is at distance 0 from it
    assert knn_scores(torch.from_numpy(bank[:5]), torch.from_numpy(bank), 1).abs().max() < 1e-3


def _covering_radius(points: np.ndarray, centres: np.ndarray) -> float:
    return float(cdist(points, centres).min(axis=1).max())


@pytest.mark.parametrize("projection_dim", [64, 4])
def test_greedy_coreset_covers_better_than_random_subsets(projection_dim):
    rng = np.random.default_rng(3)
    # clustered data with one far, small cluster: most random subsets of 20 miss it
    clusters = [rng.standard_normal((n, 8)) * 0.2 + rng.standard_normal(8) * s for n, s in ((400, 3), (300, 3), (5, 30))]
    points = np.concatenate(clusters)
    size = 20
    index = greedy_coreset(torch.from_numpy(points), size, projection_dim=projection_dim, generator=torch.Generator().manual_seed(0))
    assert index.shape == (size,) and len(set(index.tolist())) == size
    radius = _covering_radius(points, points[index.numpy()])
    random_radii = [_covering_radius(points, points[rng.choice(len(points), size, replace=False)]) for _ in range(20)]
    assert radius <= np.median(random_radii) and radius < 2 * min(random_radii)  # no random draw is 2x better
    if projection_dim >= points.shape[1]:  # unprojected: greedy k-center is within 2x of the optimum,
        # and each new centre was the farthest point, so the radius never exceeds the last pick's distance
        chosen = points[index.numpy()]
        last = cdist(chosen[-1:], chosen[:-1]).min()
        assert radius <= last * (1 + 1e-5)


def test_coreset_indices_are_unique_among_duplicate_points():
    points = torch.cat([torch.zeros(50, 4), torch.eye(4)])  # 5 distinct points, 54 rows
    index = greedy_coreset(points, 10, projection_dim=64, generator=torch.Generator().manual_seed(1))
    assert len(set(index.tolist())) == 10
    assert {tuple(p) for p in points[index[:5]].tolist()} == {tuple(p) for p in points.unique(dim=0).tolist()}


def test_patch_aggregation_is_a_3x3_mean_then_a_bilinear_fusion():
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 5, 4, 4)
    out = aggregate_patches([a, b], aggregation=3)
    assert out.shape == (2, 8, 8, 8)
    padded = F.pad(a, (1, 1, 1, 1))
    assert torch.allclose(out[:, :3, 2, 5], padded[:, :, 2:5, 5:8].mean(dim=(2, 3)))  # zero padding counted
    pooled_b = F.avg_pool2d(b, 3, 1, 1)
    assert torch.allclose(out[:, 3:], F.interpolate(pooled_b, size=(8, 8), mode="bilinear", align_corners=False))
    assert aggregate_patches([a, b], aggregation=3, embed_dim=4).shape == (2, 4, 8, 8)


# -- backbone weights ---------------------------------------------------------------------------------------
def _weights_file(tmp_path, in_chans: int = 1, suffix: str = ".safetensors"):
    torch.manual_seed(5)
    net = timm.create_model("resnet10t", pretrained=False, in_chans=in_chans, num_classes=10)
    path = tmp_path / f"w{in_chans}{suffix}"
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    return path, state


def test_a_weights_file_with_another_sha256_is_refused(tmp_path):
    path, _ = _weights_file(tmp_path)
    with pytest.raises(ConfigError, match=r"have sha256 [0-9a-f]{64}, but weights_sha256 is 0{64}"):
        read_weights_file(str(path), "0" * 64)
    with pytest.raises(ConfigError, match="does not exist"):
        read_weights_file(str(tmp_path / "nope.safetensors"), "0" * 64)
    method = uadbench.create_method("patchcore", "smoke", image_shape=SHAPE, backbone_weights="file", weights=str(path),
                                    weights_sha256="f" * 64)
    train = SliceDataset(brainlike_volumes(2, shape=(*SHAPE, 4))[0])
    with pytest.raises(ConfigError, match="sha256"):
        method.fit(train, None, FitContext())


@pytest.mark.parametrize("in_chans, suffix", [(1, ".safetensors"), (3, ".pt")])
def test_weights_are_loaded_from_the_checked_file(tmp_path, in_chans, suffix):
    path, state = _weights_file(tmp_path, in_chans, suffix)
    backbone = create_feature_backbone("resnet10t", (2, 3))
    load_backbone_state(backbone, read_weights_file(str(path), sha256_file(path)))
    own = backbone.state_dict()
    conv = state["conv1.0.weight"]
    expected = conv if in_chans == 1 else conv.sum(dim=1, keepdim=True)  # timm's adapt_input_conv for 1 channel
    assert torch.allclose(own["conv1.0.weight"], expected)
    assert torch.equal(own["layer2.0.conv1.weight"], state["layer2.0.conv1.weight"])
    with pytest.raises(ConfigError, match="lack .* of the backbone's keys"):
        load_backbone_state(backbone, {k: v for k, v in state.items() if not k.startswith("layer3")})


def test_backbone_choice_is_validated_and_in_the_config_hash():
    from uadbench.config import config_hash, create_config

    with pytest.raises(ConfigError, match='needs weights = "path'):
        create_config("padim", "cpu", backbone_weights="file")
    with pytest.raises(ConfigError, match="64 hex digits"):
        create_config("padim", "cpu", backbone_weights="file", weights="w.safetensors", weights_sha256="abc")
    with pytest.raises(ConfigError, match="only with backbone_weights"):
        create_config("patchcore", "cpu", weights="w.safetensors")
    with pytest.raises(ConfigError, match="backbone_weights must be one of"):
        create_config("patchcore", "cpu", backbone_weights="imagenet")
    with pytest.raises(ConfigError, match="unknown timm backbone 'resnet1'"):
        uadbench.create_method("patchcore", "smoke", backbone="resnet1")
    hashes = {config_hash("patchcore", create_config("patchcore", "cpu", **kw)) for kw in (
        {}, {"backbone_weights": "random"},
        {"backbone_weights": "file", "weights": "w.safetensors", "weights_sha256": "a" * 64},
        {"backbone_weights": "file", "weights": "w.safetensors", "weights_sha256": "b" * 64})}
    assert len(hashes) == 4


# -- the methods ----------------------------------------------------------------------------------------------
def _train(n: int = 4, seed: int = 0) -> SliceDataset:
    return SliceDataset(brainlike_volumes(n, shape=(*SHAPE, 6), seed=seed)[0])


def test_patchcore_bank_is_the_coreset_and_maps_are_its_upsampled_smoothed_knn_distances():
    method = uadbench.create_method("patchcore", "smoke", image_shape=SHAPE, backbone_weights="random", coreset_ratio=0.25,
                                    train_slices=1000)
    train = _train()
    method.fit(train, None, FitContext())
    patches = train.all_slices().shape[0] * 4 * 4  # layer-2 grid of a 32x32 slice: 4x4
    assert method.bank.shape == (int(patches * 0.25), method.feature_dim)
    images, _, _ = brainlike_volumes(1, shape=(*SHAPE, 6), seed=9, lesion=True)
    x = torch.from_numpy(np.moveaxis(images[0], -1, 0))[:, None].float()
    # the reference: brute-force nearest distances of the patch features to the bank, bilinear, scipy-smoothed
    feats = method.embed(x).permute(0, 2, 3, 1).reshape(-1, method.feature_dim).numpy()
    nearest = cdist(feats, method.bank.numpy()).min(axis=1).reshape(x.shape[0], 1, 4, 4)
    up = F.interpolate(torch.from_numpy(nearest), size=SHAPE, mode="bilinear", align_corners=False).numpy()
    expected = scipy_gaussian_filter(up, sigma=(0, 0, method.config.smooth_sigma, method.config.smooth_sigma))
    got = method.predict(x, generator=torch.Generator()).anomaly_map.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.allclose(method.slice_scores(x), torch.from_numpy(nearest).float().amax(dim=(1, 2, 3)), atol=1e-4)


def test_padim_gaussians_are_the_moments_of_the_training_features():
    method = uadbench.create_method("padim", "smoke", image_shape=SHAPE, backbone_weights="random", train_slices=1000)
    train = _train()
    method.fit(train, None, FitContext())
    feats = method.embed(train.all_slices()).flatten(2).transpose(1, 2).double().numpy()  # (N, P, d)
    assert method.channels.shape == (16,) and len(set(method.channels.tolist())) == 16
    pos = 5
    cov = np.cov(feats[:, pos], rowvar=False) + 0.01 * np.eye(16)
    np.testing.assert_allclose(method.mean[pos].numpy(), feats[:, pos].mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose((method.cholesky[pos] @ method.cholesky[pos].T).numpy(), cov, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["patchcore", "padim"])
def test_a_bright_lesion_scores_higher_than_healthy_brain(name):
    method = uadbench.create_method(name, "smoke", image_shape=SHAPE, pretrain_steps=5)
    torch.manual_seed(0)
    method.fit(_train(6), None, FitContext())
    images, brains, lesions = brainlike_volumes(2, shape=(*SHAPE, 6), seed=4, lesion=True)
    for image, brain, lesion in zip(images, brains, lesions):
        x = torch.from_numpy(np.moveaxis(image, -1, 0))[:, None].float()
        amap = np.moveaxis(method.predict(x, generator=torch.Generator()).anomaly_map[:, 0].numpy(), 0, -1)
        assert amap[lesion].mean() > amap[brain & ~lesion].mean()
