"""Layer similarity: CKA against its Gram-matrix definition, invariances, HSIC estimators against
their textbook formulas, CCA measures on constructions with known answers, the layer x layer matrix,
bad input, and linear CKA at corpus scale."""
from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

import speechprobe.probing.similarity as sim
from speechprobe.probing.similarity import (
    MAX_GRAM_N,
    cka_from_grams,
    hsic,
    linear_cka,
    pwcca,
    rbf_cka,
    similarity_matrix,
    svcca,
)


def related(rng: np.random.Generator, n: int, d1: int, d2: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two layers sharing a few latent directions, with offsets and unequal widths."""
    latent = rng.standard_normal((n, 4))
    X = latent @ rng.standard_normal((4, d1)) + 0.5 * rng.standard_normal((n, d1)) + 3.0
    Y = latent @ rng.standard_normal((4, d2)) + noise * rng.standard_normal((n, d2)) - 1.0
    return X, Y


def centring(n: int) -> np.ndarray:
    return np.eye(n) - np.ones((n, n)) / n


def gram_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Biased HSIC straight from the definition, with an explicit centring matrix."""
    H = centring(K.shape[0])
    return float(np.trace(K @ H @ L @ H)) / (K.shape[0] - 1) ** 2


def gram_cka(X: np.ndarray, Y: np.ndarray) -> float:
    K, L = X @ X.T, Y @ Y.T
    return gram_hsic(K, L) / np.sqrt(gram_hsic(K, K) * gram_hsic(L, L))


def random_kernel(rng: np.random.Generator, n: int) -> np.ndarray:
    A = rng.standard_normal((n, 3))
    return A @ A.T + 0.1 * np.eye(n)


# --------------------------------------------------------------------------------------------------
# linear CKA


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_cka_equals_gram_matrix_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    X, Y = related(rng, 60, 7, 13)
    assert linear_cka(X, Y) == pytest.approx(gram_cka(X, Y), abs=1e-10)
    assert linear_cka(X, Y) == pytest.approx(
        gram_hsic(X @ X.T, Y @ Y.T) / np.sqrt(gram_hsic(X @ X.T, X @ X.T) * gram_hsic(Y @ Y.T, Y @ Y.T)),
        abs=1e-10,
    )


def test_linear_cka_invariances() -> None:
    rng = np.random.default_rng(3)
    X, Y = related(rng, 300, 10, 12)
    base = linear_cka(X, Y)
    assert 0.2 < base < 0.95  # a value with room to move either way
    Q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    assert linear_cka(X @ Q, Y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(X, Y @ np.linalg.qr(rng.standard_normal((12, 12)))[0]) == pytest.approx(base, abs=1e-12)
    assert linear_cka(7.5 * X, 0.01 * Y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(X + rng.standard_normal(10) * 100, Y - 42.0) == pytest.approx(base, abs=1e-10)
    anisotropic = np.logspace(-2, 2, 10)
    assert abs(linear_cka(X * anisotropic, Y) - base) > 0.05


def test_linear_cka_self_symmetry_and_independence() -> None:
    rng = np.random.default_rng(4)
    X, Y = related(rng, 200, 9, 5)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), abs=1e-14)
    A, B = rng.standard_normal((20_000, 10)), rng.standard_normal((20_000, 10))
    assert linear_cka(A, B) < 0.01
    small_a, small_b = A[:50], B[:50]  # the biased estimator's small-N inflation ...
    assert linear_cka(small_a, small_b) > 0.1
    assert abs(linear_cka(small_a, small_b, unbiased=True)) < 0.05  # ... which the unbiased one removes


def test_linear_cka_constant_neurons() -> None:
    rng = np.random.default_rng(5)
    X, Y = related(rng, 100, 6, 8)
    padded = np.column_stack([X, np.full(100, 0.1), np.full(100, -3e7)])  # 0.1: mean is inexact
    assert linear_cka(padded, Y) == pytest.approx(linear_cka(X, Y), abs=1e-12)
    constant = np.full((100, 4), 0.1)
    assert linear_cka(constant, Y) == 0.0
    assert linear_cka(Y, constant) == 0.0
    assert linear_cka(constant, constant) == 0.0


def test_linear_cka_unbiased_matches_gram_route() -> None:
    rng = np.random.default_rng(6)
    X, Y = related(rng, 40, 5, 9)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    assert linear_cka(X, Y, unbiased=True) == pytest.approx(
        cka_from_grams(Xc @ Xc.T, Yc @ Yc.T, unbiased=True), abs=1e-12
    )
    assert linear_cka(X, X, unbiased=True) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="N = 5001"):
        linear_cka(np.ones((MAX_GRAM_N + 1, 2)), np.ones((MAX_GRAM_N + 1, 2)), unbiased=True)


def test_linear_cka_scales_to_200k_rows_without_n_by_n() -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    X = rng.standard_normal((n, 64)) + 5.0
    Y = X[:, :32] @ rng.standard_normal((32, 64)) + 3.0 * rng.standard_normal((n, 64))
    tracemalloc.start()
    value = linear_cka(X, Y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # centred copies at most; an N x N matrix would be 320 GB (speed: benchmarks/layer_similarity.py)
    assert peak < 1.5 * (X.nbytes + Y.nbytes)
    # reference: cross-covariances accumulated over 10 chunks of rows, then centred algebraically
    sxy, sxx, syy = np.zeros((64, 64)), np.zeros((64, 64)), np.zeros((64, 64))
    for rows in np.array_split(np.arange(n), 10):
        x, y = X[rows], Y[rows]
        sxy += x.T @ y
        sxx += x.T @ x
        syy += y.T @ y
    mx, my = X.mean(0), Y.mean(0)
    cxy = sxy - n * np.outer(mx, my)
    cxx = sxx - n * np.outer(mx, mx)
    cyy = syy - n * np.outer(my, my)
    expected = np.linalg.norm(cxy) ** 2 / (np.linalg.norm(cxx) * np.linalg.norm(cyy))
    assert value == pytest.approx(expected, abs=1e-9)
    assert 0.1 < value < 0.9


# --------------------------------------------------------------------------------------------------
# HSIC estimators


def song_unbiased_loops(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. 4 as a U-statistic: mean over distinct (i, j, q, r) of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq (the sum over all ordered tuples already averages h's 24
    permutations)."""
    n = K.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2.0 * K[i, j] * L[i, q]
        count += 1
    return total / count


def song_unbiased_closed_form(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return float(
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    ) / (n * (n - 3))


@pytest.mark.parametrize("seed", [0, 1])
def test_unbiased_hsic_matches_song_et_al(seed: int) -> None:
    rng = np.random.default_rng(seed)
    K, L = random_kernel(rng, 7), random_kernel(rng, 7)
    expected = song_unbiased_loops(K, L)
    assert song_unbiased_closed_form(K, L) == pytest.approx(expected, abs=1e-10)
    assert hsic(K, L, unbiased=True) == pytest.approx(expected, abs=1e-10)
    assert hsic(K, K, unbiased=True) == pytest.approx(song_unbiased_loops(K, K), abs=1e-10)


def test_biased_hsic_and_cka_from_grams() -> None:
    rng = np.random.default_rng(8)
    K, L = random_kernel(rng, 12), random_kernel(rng, 12)
    assert hsic(K, L) == pytest.approx(gram_hsic(K, L), abs=1e-12)
    assert cka_from_grams(K, L) == pytest.approx(
        gram_hsic(K, L) / np.sqrt(gram_hsic(K, K) * gram_hsic(L, L)), abs=1e-12
    )
    assert cka_from_grams(K, K) == pytest.approx(1.0, abs=1e-12)
    assert cka_from_grams(K, np.ones((12, 12))) == 0.0  # nothing left after centring
    unbiased = cka_from_grams(K, L, unbiased=True)
    assert -1.0 <= unbiased <= 1.0
    assert unbiased == pytest.approx(
        hsic(K, L, True) / np.sqrt(hsic(K, K, True) * hsic(L, L, True)), abs=1e-12
    )


def test_hsic_bad_input() -> None:
    rng = np.random.default_rng(9)
    K = random_kernel(rng, 6)
    with pytest.raises(ValueError, match="n > 3"):
        hsic(K[:3, :3], K[:3, :3], unbiased=True)
    with pytest.raises(ValueError, match="square"):
        hsic(K[:, :4], K[:, :4])
    with pytest.raises(ValueError, match="different sizes"):
        hsic(K, K[:5, :5])
    with pytest.raises(ValueError, match="symmetric"):
        hsic(K + np.triu(np.ones((6, 6)), 1), K)
    bad = K.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cka_from_grams(bad, K)


# --------------------------------------------------------------------------------------------------
# RBF CKA


def test_rbf_cka_self_large_sigma_and_invariances() -> None:
    rng = np.random.default_rng(10)
    X, Y = related(rng, 150, 6, 9)
    assert rbf_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(X, Y) == pytest.approx(rbf_cka(X, Y, sigma=0.8), abs=0.0)
    linear = linear_cka(X, Y)
    assert rbf_cka(X, Y, sigma=100.0) == pytest.approx(linear, abs=1e-3)
    assert abs(rbf_cka(X, Y, sigma=0.2) - linear) > 0.01  # a narrow kernel measures something else
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    assert rbf_cka(3.0 * X @ Q + 1.0, Y) == pytest.approx(rbf_cka(X, Y), abs=1e-10)


@pytest.mark.parametrize("sigma", [None, 0.5, 2.0])
def test_rbf_cka_equals_explicit_kernels(sigma: float | None) -> None:
    """Gaussian kernels of width sigma x the median distance over distinct pairs (scipy's pdist)."""
    from scipy.spatial.distance import pdist, squareform

    rng = np.random.default_rng(21)
    X, Y = related(rng, 80, 5, 7)
    fraction = 0.8 if sigma is None else sigma

    def kernel(Z: np.ndarray) -> np.ndarray:
        distances = pdist(Z)
        width = fraction * np.median(distances)
        return np.exp(-squareform(distances) ** 2 / (2.0 * width**2))

    K, L = kernel(X), kernel(Y)
    expected = gram_hsic(K, L) / np.sqrt(gram_hsic(K, K) * gram_hsic(L, L))
    assert rbf_cka(X, Y, sigma=sigma) == pytest.approx(expected, abs=1e-10)


def test_rbf_cka_refuses_large_n_and_bad_sigma() -> None:
    big = np.zeros((MAX_GRAM_N + 1, 2))
    with pytest.raises(ValueError, match=r"N = 5001.*linear_cka"):
        rbf_cka(big, big)
    X = np.random.default_rng(11).standard_normal((10, 3))
    with pytest.raises(ValueError, match="sigma"):
        rbf_cka(X, X, sigma=0.0)
    assert rbf_cka(np.ones((10, 2)), X) == 0.0
    mostly_alike = np.ones((10, 2))
    mostly_alike[:2] = [[0.0, 5.0], [3.0, -1.0]]  # median pairwise distance is 0
    assert 0.0 < rbf_cka(mostly_alike, X) < 1.0
    assert rbf_cka(mostly_alike[:2], X[:2]) == pytest.approx(1.0)  # N = 2: both sides are one pair


# --------------------------------------------------------------------------------------------------
# SVCCA and PWCCA


def classical_cca(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Canonical correlations from covariance matrices: sqrt of eig(Sxx^-1 Sxy Syy^-1 Syx)."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    sxx, syy, sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    eig = np.linalg.eigvals(np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)).real
    return np.sqrt(np.clip(np.sort(eig)[::-1][: min(X.shape[1], Y.shape[1])], 0.0, 1.0))


def test_svcca_full_keep_matches_classical_cca() -> None:
    rng = np.random.default_rng(12)
    X, Y = related(rng, 500, 5, 7)
    assert svcca(X, Y, keep=1.0) == pytest.approx(float(np.mean(classical_cca(X, Y))), abs=1e-9)


def test_cca_measures_are_one_under_invertible_maps() -> None:
    rng = np.random.default_rng(13)
    X = rng.standard_normal((400, 10)) + 2.0
    M = rng.standard_normal((10, 10)) + 3.0 * np.eye(10)
    for keep in (0.99, 1.0):
        assert svcca(X, X @ M, keep=keep) == pytest.approx(1.0, abs=1e-8)
    assert pwcca(X, X @ M) == pytest.approx(1.0, abs=1e-8)
    assert pwcca(X @ M, X) == pytest.approx(1.0, abs=1e-8)


def test_cca_measures_on_known_canonical_correlations() -> None:
    rng = np.random.default_rng(14)
    n = 20_000
    z1, z2, noise = rng.standard_normal((3, n))
    X, Y = np.column_stack([z1, z2]), np.column_stack([z1, noise])
    rho = classical_cca(X, Y)
    assert rho[0] == pytest.approx(1.0, abs=1e-12) and rho[1] < 0.03
    assert svcca(X, Y, keep=1.0) == pytest.approx(0.5, abs=0.02)
    assert pwcca(X, Y) == pytest.approx(0.5, abs=0.02)  # both directions carry X equally
    # PWCCA weights by X's activity: the shared direction dominant -> ~10/11, minor -> ~1/11
    assert pwcca(np.column_stack([10 * z1, z2]), Y) == pytest.approx(10 / 11, abs=0.02)
    assert pwcca(np.column_stack([z1, 10 * z2]), Y) == pytest.approx(1 / 11, abs=0.02)
    # SVCCA's variance cut: keeping 90% of [10 z1, z2] keeps only its top direction, which is z1 up
    # to the sample correlation of z1 and z2 (~1/sqrt(n)), so it is matched in Y almost perfectly
    assert svcca(np.column_stack([10 * z1, z2]), Y, keep=0.9) == pytest.approx(1.0, abs=1e-6)
    assert svcca(np.column_stack([10 * z1, z2]), Y, keep=1.0) == pytest.approx(0.5, abs=0.02)


def test_cca_measures_rank_deficient_and_constant_inputs() -> None:
    rng = np.random.default_rng(15)
    wide_x, wide_y = rng.standard_normal((12, 40)), rng.standard_normal((12, 30))
    for value in (svcca(wide_x, wide_y), svcca(wide_x, wide_y, keep=0.5), pwcca(wide_x, wide_y)):
        assert np.isfinite(value) and 0.0 <= value <= 1.0 + 1e-12
    X, Y = related(rng, 200, 5, 6)
    padded = np.column_stack([X, np.full(200, 0.1), X[:, 0]])  # a constant and a duplicated neuron
    assert np.isfinite(svcca(padded, Y)) and np.isfinite(pwcca(padded, Y))
    assert svcca(padded, Y, keep=1.0) == pytest.approx(svcca(X, Y, keep=1.0), abs=1e-9)
    constant = np.full((200, 3), 0.1)
    assert svcca(constant, Y) == 0.0 and pwcca(constant, Y) == 0.0 and pwcca(Y, constant) == 0.0
    with pytest.raises(ValueError, match="keep"):
        svcca(X, Y, keep=0.0)


# --------------------------------------------------------------------------------------------------
# layer x layer matrix


def encoder_layers(rng: np.random.Generator, n: int, widths: list[int], prefix: str) -> dict[str, np.ndarray]:
    """Layers that drift away from a common latent, like successive layers of one encoder."""
    latent = rng.standard_normal((n, 4))
    layers, state = {}, latent
    for i, width in enumerate(widths):
        state = np.tanh(state @ rng.standard_normal((state.shape[1], width)) / 2.0)
        state = state + 0.3 * rng.standard_normal(state.shape)
        layers[f"{prefix}{i}"] = state
    return layers


@pytest.mark.parametrize("measure", ["linear_cka", "rbf_cka", "svcca", "pwcca"])
def test_similarity_matrix_within_encoder_equals_pairwise_calls(measure: str) -> None:
    rng = np.random.default_rng(16)
    layers = encoder_layers(rng, 120, [8, 12, 6, 10], "enc.")
    function = {"linear_cka": linear_cka, "rbf_cka": rbf_cka, "svcca": svcca, "pwcca": pwcca}[measure]
    names_a, names_b, matrix = similarity_matrix(layers, measure=measure)
    assert names_a == names_b == list(layers)
    assert matrix.shape == (4, 4)
    assert np.all(np.diag(matrix) == 1.0)
    for i, a in enumerate(names_a):
        for j, b in enumerate(names_b):
            if i != j:
                assert matrix[i, j] == pytest.approx(function(layers[a], layers[b]), abs=1e-12)
    if measure != "pwcca":  # pwcca takes its weights from the row layer
        assert np.array_equal(matrix, matrix.T)


def test_similarity_matrix_linear_cka_prepares_each_layer_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"prepare": 0, "pair": 0}
    prepare, pair = sim._prep_linear, sim._pair_linear

    def counting_prepare(X):
        calls["prepare"] += 1
        return prepare(X)

    def counting_pair(a, b):
        calls["pair"] += 1
        return pair(a, b)

    monkeypatch.setattr(sim, "_prep_linear", counting_prepare)
    monkeypatch.setattr(sim, "_pair_linear", counting_pair)
    layers = encoder_layers(np.random.default_rng(17), 50, [5] * 6, "l")
    similarity_matrix(layers)
    assert calls == {"prepare": 6, "pair": 6 * 5 // 2}


def test_similarity_matrix_between_encoders() -> None:
    rng = np.random.default_rng(18)
    a = encoder_layers(rng, 100, [8, 8, 8], "a")
    b = encoder_layers(rng, 100, [16, 4], "b")
    b["copy_of_a1"] = a["a1"] @ np.linalg.qr(rng.standard_normal((8, 8)))[0]
    for measure in ("linear_cka", "pwcca"):
        names_a, names_b, matrix = similarity_matrix(a, b, measure=measure)
        assert (names_a, names_b) == (["a0", "a1", "a2"], ["b0", "b1", "copy_of_a1"])
        assert matrix.shape == (3, 3)
        function = linear_cka if measure == "linear_cka" else pwcca
        for i, x in enumerate(names_a):
            for j, y in enumerate(names_b):
                assert matrix[i, j] == pytest.approx(function(a[x], b[y]), abs=1e-12)
        assert matrix[1, 2] == pytest.approx(1.0, abs=1e-9)
    _, _, rows = similarity_matrix(a, a)
    _, _, within = similarity_matrix(a)
    assert np.allclose(rows, within, atol=1e-12)


def test_similarity_matrix_bad_input() -> None:
    rng = np.random.default_rng(19)
    layers = encoder_layers(rng, 30, [4, 4], "x")
    with pytest.raises(ValueError, match=r"'x0' \(N=30\) and 'short' \(N=29\)"):
        similarity_matrix({**layers, "short": layers["x1"][:29]})
    with pytest.raises(ValueError, match=r"'x0' \(N=30\) and 'other' \(N=20\)"):
        similarity_matrix(layers, {"other": rng.standard_normal((20, 3))})
    broken = layers["x1"].copy()
    broken[3, 2] = np.nan
    with pytest.raises(ValueError, match="layer 'bad' contains NaN"):
        similarity_matrix({"x0": layers["x0"], "bad": broken})
    with pytest.raises(ValueError, match="unknown similarity measure 'cca'.*'linear_cka'.*'pwcca'"):
        similarity_matrix(layers, measure="cca")
    with pytest.raises(ValueError, match="non-empty mapping"):
        similarity_matrix({})
    with pytest.raises(ValueError, match=r"different numbers of rows \(30 vs 29\)"):
        linear_cka(layers["x0"], layers["x1"][:29])
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(layers["x0"][:, 0], layers["x1"])


def test_similarity_matrix_constant_layer_has_zero_diagonal() -> None:
    rng = np.random.default_rng(20)
    layers = {"live": rng.standard_normal((40, 5)), "dead": np.zeros((40, 5))}
    _, _, matrix = similarity_matrix(layers)
    assert matrix.tolist() == [[1.0, 0.0], [0.0, 0.0]]
