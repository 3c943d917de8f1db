"""Tests for ebmcmc.energy: evaluation helpers, adapters and combinators."""

from __future__ import annotations

import math

import pytest
import torch

from ebmcmc.energy import (
    Annealed,
    Energy,
    SumOf,
    Tempered,
    energy_and_grad,
    evaluate,
    from_distribution,
    from_log_prob,
    validate,
)


def quadratic(a: torch.Tensor):
    """E(x) = 0.5 x^T A x over the last dimension; gradient A x (A symmetric)."""

    def energy(x):
        return 0.5 * ((x @ a) * x).sum(-1)

    return energy


class MLPEnergy(torch.nn.Module):
    def __init__(self, d: int = 3):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        )

    def forward(self, x):
        return self.net(x).squeeze(-1)


# ----------------------------------------------------------------------------- energy_and_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(5,), (2, 3)])
def test_energy_and_grad_matches_analytic_gradient(make_gen, dtype, batch):
    g = make_gen(1)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    a = (m @ m.T + torch.eye(4, dtype=torch.float64)).to(dtype)
    x = torch.randn(*batch, 4, generator=g, dtype=torch.float64).to(dtype)
    e, grad = energy_and_grad(quadratic(a), x)
    assert e.shape == batch and grad.shape == x.shape
    assert e.dtype == dtype and grad.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, x @ a, **tol)
    torch.testing.assert_close(e, 0.5 * ((x @ a) * x).sum(-1), **tol)
    assert not e.requires_grad and not grad.requires_grad
    assert e.grad_fn is None and grad.grad_fn is None


def test_energy_and_grad_leaves_module_parameters_untouched(gen):
    net = MLPEnergy()
    x = torch.randn(6, 3, generator=gen)
    e, g = energy_and_grad(net, x)
    assert all(p.grad is None for p in net.parameters())
    assert x.grad is None and not x.requires_grad
    # finite differences confirm the gradient with respect to x
    h = 1e-3
    for i in range(3):
        dx = torch.zeros_like(x)
        dx[:, i] = h
        fd = (net(x + dx) - net(x - dx)).detach() / (2 * h)
        torch.testing.assert_close(g[:, i], fd, rtol=1e-2, atol=1e-3)
    # existing parameter gradients are not modified either
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    energy_and_grad(net, x)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in net.parameters())


def test_energy_and_grad_create_graph_allows_second_derivatives(gen):
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    x = torch.randn(3, 2, generator=gen, dtype=torch.float64).requires_grad_(True)
    e, g = energy_and_grad(quadratic(a), x, create_graph=True)
    assert g.requires_grad
    # d/dx of sum(g . v) = A v for a constant v: the Hessian-vector product
    v = torch.tensor([1.0, -1.0], dtype=torch.float64)
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    torch.testing.assert_close(hv, (a @ v).expand(3, 2))


def test_energy_and_grad_inside_no_grad_context(gen):
    x = torch.randn(4, 2, generator=gen)
    with torch.no_grad():
        _, g = energy_and_grad(lambda x: (x**2).sum(-1), x)
    torch.testing.assert_close(g, 2 * x)


def test_energy_and_grad_rejects_non_batch_shaped_output(gen):
    x = torch.randn(4, 2, generator=gen)
    with pytest.raises(ValueError, match="energy returned shape"):
        energy_and_grad(lambda x: x.sum(0), x)


# ----------------------------------------------------------------------------- evaluate / validate


def test_evaluate_builds_no_graph_and_checks_shape(gen):
    net = MLPEnergy()
    x = torch.randn(5, 3, generator=gen)
    e = evaluate(net, x)
    assert e.shape == (5,) and e.grad_fn is None
    # an output equal to the full input shape is a valid energy with event shape ()
    assert evaluate(lambda x: x, torch.zeros(4, 1, 2)).shape == (4, 1, 2)
    with pytest.raises(ValueError, match="expected the batch shape"):
        evaluate(lambda x: x.sum(-1, keepdim=True).T, torch.zeros(4, 2))
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        evaluate(lambda x: 1.0, torch.zeros(4, 2))


def test_validate_accepts_good_input():
    e = validate(lambda x: (x**2).sum(-1), torch.ones(3, 2))
    torch.testing.assert_close(e, torch.full((3,), 2.0))


@pytest.mark.parametrize(
    "energy, x, exc, match",
    [
        (lambda x: x.sum(-1), [[0.0, 1.0]], TypeError, "init must be a torch.Tensor"),
        (lambda x: x.sum(-1), torch.zeros(2, 2, dtype=torch.int64), TypeError, "floating-point"),
        (lambda x: x.sum(-1), torch.tensor([[0.0, math.nan]]), ValueError, "init contains non"),
        (lambda x: x.sum(-1), torch.tensor([[0.0, math.inf]]), ValueError, "init contains non"),
        (lambda x: x.sum(), torch.zeros(3, 2), ValueError, None),
        (lambda x: x.sum(0), torch.zeros(3, 2), ValueError, "energy returned shape"),
        (
            lambda x: torch.where(x[:, 0] > 0, torch.inf, 0.0),
            torch.tensor([[1.0, 0.0], [-1.0, 0.0]]),
            ValueError,
            "energy is not finite at 1 of 2 points of init",
        ),
        (
            lambda x: torch.full(x.shape[:-1], math.nan),
            torch.zeros(3, 2),
            ValueError,
            "energy is not finite at 3 of 3",
        ),
    ],
)
def test_validate_errors(energy, x, exc, match):
    if match is None:
        # a scalar output is a valid energy of batch shape (): validate allows it (the
        # sampling driver rejects it for lack of a chain dimension)
        assert validate(energy, x).shape == ()
        return
    with pytest.raises(exc, match=match):
        validate(energy, x)


def test_energy_protocol():
    assert isinstance(lambda x: x.sum(-1), Energy)
    assert isinstance(MLPEnergy(), Energy)
    assert not isinstance(3, Energy)


# ----------------------------------------------------------------------------- adapters


def test_from_log_prob_negates(gen):
    def log_prob(x):
        return -0.5 * (x**2).sum(-1) + 3.0

    e = from_log_prob(log_prob)
    x = torch.randn(2, 4, 3, generator=gen)
    torch.testing.assert_close(e(x), -log_prob(x))
    assert isinstance(e, torch.nn.Module)
    with pytest.raises(TypeError, match="log_prob must be callable"):
        from_log_prob(3.0)


def test_from_distribution_multivariate_normal(gen):
    cov = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    mean = torch.tensor([1.0, -1.0], dtype=torch.float64)
    d = torch.distributions.MultivariateNormal(mean, cov)
    e = from_distribution(d)
    x = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    out = e(x)
    assert out.shape == (3, 5)
    assert e.event_shape == (2,)
    diff = x - mean
    expected = 0.5 * (diff @ torch.linalg.inv(cov) * diff).sum(-1) + 0.5 * torch.logdet(
        2 * math.pi * cov
    )
    torch.testing.assert_close(out, expected)
    # gradient through the adapter
    _, g = energy_and_grad(e, x)
    torch.testing.assert_close(g, diff @ torch.linalg.inv(cov))


def test_from_distribution_independent_and_batch_shape_error(gen):
    base = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match=r"batch_shape \(\), got \(3,\)"):
        from_distribution(base)
    e = from_distribution(torch.distributions.Independent(base, 1))
    x = torch.randn(4, 3, generator=gen)
    torch.testing.assert_close(e(x), 0.5 * (x**2).sum(-1) + 1.5 * math.log(2 * math.pi))
    with pytest.raises(TypeError, match="torch.distributions.Distribution"):
        from_distribution(lambda x: x)


# ----------------------------------------------------------------------------- combinators


def _e1(x):
    return (x**2).sum(-1)


def _e2(x):
    return x.sum(-1)


def test_tempered_values_and_per_chain_beta(gen):
    x = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(Tempered(_e1, 0.25)(x), 0.25 * _e1(x))
    beta = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(Tempered(_e1, beta)(x), beta * _e1(x))
    # float32 input with a float64 beta follows the input dtype
    assert Tempered(_e1, beta)(x.float()).dtype == torch.float32
    for bad in (-0.1, math.nan, math.inf, torch.tensor([1.0, -1.0])):
        with pytest.raises(ValueError, match="beta must be finite and non-negative"):
            Tempered(_e1, bad)


def test_annealed_endpoints_and_midpoint(gen):
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(Annealed(_e1, _e2, 0.0)(x), _e1(x))
    torch.testing.assert_close(Annealed(_e1, _e2, 1.0)(x), _e2(x))
    torch.testing.assert_close(Annealed(_e1, _e2, 0.3)(x), 0.7 * _e1(x) + 0.3 * _e2(x))
    beta = torch.linspace(0, 1, 5, dtype=torch.float64)
    torch.testing.assert_close(Annealed(_e1, _e2, beta)(x), (1 - beta) * _e1(x) + beta * _e2(x))
    for bad in (-0.01, 1.01, math.nan, torch.tensor([0.5, 2.0])):
        with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\]"):
            Annealed(_e1, _e2, bad)


def test_sum_of_values_weights_and_errors(gen):
    x = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(SumOf(_e1, _e2)(x), _e1(x) + _e2(x))
    torch.testing.assert_close(SumOf(_e1, _e2, weights=[2.0, -0.5])(x), 2 * _e1(x) - 0.5 * _e2(x))
    torch.testing.assert_close(SumOf(_e1)(x), _e1(x))
    with pytest.raises(ValueError, match="at least one energy"):
        SumOf()
    with pytest.raises(TypeError, match=r"energies\[1\] is not callable"):
        SumOf(_e1, 3)
    with pytest.raises(ValueError, match="weights has 1 entries for 2 energies"):
        SumOf(_e1, _e2, weights=[1.0])


def test_sum_of_registers_module_parameters():
    net = MLPEnergy(2)
    s = SumOf([net, _e1])
    assert {id(p) for p in s.parameters()} == {id(p) for p in net.parameters()}
    # gradients wrt x only, even through a composite with modules
    x = torch.zeros(3, 2)
    energy_and_grad(s, x)
    assert all(p.grad is None for p in net.parameters())


def test_the_0_1_combinator_functions_warn_and_agree(gen):
    """tempered / annealed / sum_of were the 0.1 spellings of the classes (removed in 0.3)."""
    from ebmcmc import energy as E

    x = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    for old, new in (
        (lambda: E.tempered(_e1, 0.5), lambda: Tempered(_e1, 0.5)),
        (lambda: E.annealed(_e1, _e2, 0.3), lambda: Annealed(_e1, _e2, 0.3)),
        (
            lambda: E.sum_of(_e1, _e2, weights=[2.0, 1.0]),
            lambda: SumOf(_e1, _e2, weights=[2.0, 1.0]),
        ),
    ):
        with pytest.warns(DeprecationWarning, match="ebmcmc.energy.[A-Z]"):
            a = old()
        assert type(a) is type(new())
        torch.testing.assert_close(a(x), new()(x))
