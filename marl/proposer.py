"""The autoregressive proposer of the trajectory-diffuser oracle: a small causal transformer.

The trajectory-diffuser planner (Huang et al., ECCV 2024) splits planning in two: a cheap
autoregressive model *proposes* a sequence of future observations, and a diffusion model refines
it. This module is the proposer. It reads one token per step of the learning player's episode,
``(observation_t, label_t)`` -- the label is the step's conditioning value (a return-to-go or a
risk-adjusted value) -- and predicts the NEXT token ``(observation_{t+1}, label_{t+1})`` as a
diagonal Gaussian (a mean and a log-std per feature), trained by Gaussian negative
log-likelihood. Sampling from that Gaussian (``propose`` with ``temperature > 0``) keeps the
proposals varied; ``temperature = 0`` follows the means.

Model (``ProposerNet``, ``flax.nnx``): tokens ``(T, D + 1)`` are standardised (per feature, with
statistics of the training data kept in the params), embedded linearly, added to learned
positional embeddings, passed through ``layers`` pre-LayerNorm transformer blocks (causal
multi-head self-attention written out here, with an explicit mask: position ``t`` attends to
``s <= t`` only, and never to an invalid step other than itself; then a ``4 * width`` GELU MLP),
and a final LayerNorm and linear head give ``2 (D + 1)`` numbers per position. The mean is
*residual*: predicted next token = current token + head output (in standardised units), so a
fresh model starts near "nothing changes". The log-std is kept inside
``[log_std_min, log_std_max]`` by two softplus bends (smooth, so its gradient never dies at a
bound). The head starts at zero: a fresh model predicts "no change" with log-std about -0.3.
``ProposerNet.step`` is the same network for one new token against a per-layer key/value cache;
``propose`` samples with it (one token through the network per step), the parameters are the
same.

Params are a plain nested dict (house style, see ``marl.networks``):
``{"net": <nnx.to_pure_dict of ProposerNet>, "norm": {"mean": (D + 1,), "std": (D + 1,)}}``.
The graphdef is a function of the config (``proposer_graphdef``), so every apply function takes
``config`` first.

Shapes: an episode segment is ``obs (L, D)`` float32, ``labels (L,)`` float32 and a valid-step
mask ``(L,)``; a dataset stacks ``N`` of them. A plan is ``(H, D)`` observations whose first row
is the current observation.

Example::

    import jax, jax.numpy as jnp
    from marl import proposer
    cfg = proposer.ProposerConfig(obs_dim=3, context=8, train_steps=200, batch_size=16)
    obs = jax.random.normal(jax.random.key(0), (32, 8, 3))      # (N, L, D)
    labels = jnp.cumsum(obs[..., 0], axis=1)                     # (N, L)
    mask = jnp.ones((32, 8), bool)                               # (N, L)
    params, losses = jax.jit(proposer.train_proposer, static_argnums=1)(
        jax.random.key(1), cfg, obs, labels, mask)               # losses: (200,)
    plans, plan_labels = proposer.propose(
        cfg, params, jax.random.key(2), obs[:4, 0], labels[:4, 0], horizon=6)
    plans.shape, plan_labels.shape                               # (4, 6, 3), (4, 6)
    # several seeds in one program:
    params2, losses2 = jax.vmap(lambda k: proposer.train_proposer(k, cfg, obs, labels, mask))(
        jax.random.split(jax.random.key(3), 2))
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from envs.settings import SettingError, check_int, check_number
from marl import _fit

Params = _fit.Params


@dataclasses.dataclass(frozen=True)
class ProposerConfig:
    """Settings of the proposer (all static: a change recompiles).

    Attributes:
      obs_dim: D, the length of one observation.
      context: the longest token sequence the transformer reads (the learned positional
        embeddings have this many rows); training windows are ``min(L, context)`` steps and
        ``propose`` keeps the last ``context`` tokens.
      width: the model width; heads: attention heads (must divide ``width``); layers: blocks.
      dropout: dropout rate on the attention weights' output and the MLP output during
        training (0 disables it; sampling never drops).
      train_steps: Adam steps of ``train_proposer`` (one ``lax.scan``).
      batch_size: segments per step (drawn with replacement, weighted by their valid steps).
      lr, max_grad_norm: Adam learning rate and the global gradient-norm clip.
      log_std_min, log_std_max: the range of the predicted log-std (standardised units).
    """

    obs_dim: int
    context: int = 16
    width: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.0
    train_steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    log_std_min: float = -5.0
    log_std_max: float = 1.0

    def __post_init__(self):
        for name in ("obs_dim", "context", "width", "layers", "heads", "train_steps"):
            check_int(name, getattr(self, name), lo=1)
        check_int("batch_size", self.batch_size, lo=1)
        if self.width % self.heads:
            raise SettingError("heads", self.heads, f"must divide width = {self.width}")
        check_number("dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        check_number("lr", self.lr, lo=0.0, lo_open=True)
        check_number("max_grad_norm", self.max_grad_norm, lo=0.0, lo_open=True)
        check_number("log_std_min", self.log_std_min)
        check_number("log_std_max", self.log_std_max, lo=self.log_std_min, lo_open=True)


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    if key is None or rate <= 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class CausalSelfAttention(nnx.Module):
    """Multi-head self-attention with an explicit boolean mask.

    ``__call__(x (..., T, W), allowed (..., T, T)) -> (..., T, W)``: query ``t`` attends to key
    ``s`` only where ``allowed[..., t, s]``. Masked scores are set to the lowest float before the
    softmax, so their weights are exactly 0 (each row must allow at least one key -- the
    diagonal, in ``ProposerNet``) and a masked key's value cannot change the output at all.
    """

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        *lead, t, w = x.shape
        dh = w // self.heads
        q, k, v = jnp.split(self.qkv(x).reshape(*lead, t, 3, self.heads, dh), 3, axis=-3)
        q, k, v = q[..., 0, :, :], k[..., 0, :, :], v[..., 0, :, :]  # (..., T, h, dh)
        scores = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(dh)
        allowed = allowed[..., None, :, :]  # broadcast over heads
        scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1) * allowed  # exact zeros where masked
        out = jnp.einsum("...hqk,...khd->...qhd", weights, v).reshape(*lead, t, w)
        return self.out(out)

    def step(self, x: jax.Array, cache: tuple[jax.Array, jax.Array], pos: jax.Array):
        """One new token ``x (B, W)`` at position ``pos`` (a scalar, may be traced).

        ``cache = (keys, values)``, each ``(B, S, heads, W / heads)``: the keys and values of
        positions ``< pos`` (later slots are ignored). The token's own key and value are written
        at slot ``pos`` and it attends to slots ``<= pos`` -- the same masking (exact zeros) as
        ``__call__`` with a causal mask and every step valid. Returns ``(out (B, W), cache)``.
        """
        b, w = x.shape
        dh = w // self.heads
        q, k, v = jnp.split(self.qkv(x).reshape(b, 3, self.heads, dh), 3, axis=1)
        keys = jax.lax.dynamic_update_index_in_dim(cache[0], k, pos, axis=1)
        values = jax.lax.dynamic_update_index_in_dim(cache[1], v, pos, axis=1)
        scores = jnp.einsum("bhd,bkhd->bhk", q[:, 0], keys) / math.sqrt(dh)
        allowed = (jnp.arange(keys.shape[1]) <= pos)[None, None, :]
        scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1) * allowed
        out = jnp.einsum("bhk,bkhd->bhd", weights, values).reshape(b, w)
        return self.out(out), (keys, values)


class _Block(nnx.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.ln_attn = nnx.LayerNorm(width, rngs=rngs)
        self.attn = CausalSelfAttention(width, heads, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(width, rngs=rngs)
        self.fc_in = nnx.Linear(width, 4 * width, rngs=rngs)
        self.fc_out = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x, allowed, rate, keys):
        x = x + _dropout(self.attn(self.ln_attn(x), allowed), rate, keys[0])
        h = self.fc_out(jax.nn.gelu(self.fc_in(self.ln_mlp(x))))
        return x + _dropout(h, rate, keys[1])

    def step(self, x, cache, pos):
        """``__call__`` for one new token ``x (B, W)`` (no dropout); see
        ``CausalSelfAttention.step``."""
        a, cache = self.attn.step(self.ln_attn(x), cache, pos)
        x = x + a
        return x + self.fc_out(jax.nn.gelu(self.fc_in(self.ln_mlp(x)))), cache


class ProposerNet(nnx.Module):
    """The causal transformer over standardised tokens ``(obs, label)`` of width ``D + 1``.

    ``__call__(tokens (..., T, D + 1), valid (..., T) | None, dropout_key=None)`` with
    ``T <= context`` returns ``(mean, log_std)``, both ``(..., T, D + 1)``: the Gaussian over the
    token at ``t + 1`` read at position ``t`` (standardised units; ``mean`` is residual, i.e.
    already includes ``tokens``). ``valid`` (default all true) hides invalid steps from the
    other positions' attention; an invalid position still sees itself.
    """

    def __init__(self, config: ProposerConfig, *, rngs: nnx.Rngs):
        feat = config.obs_dim + 1
        self.num_layers = config.layers
        self.rate = float(config.dropout)
        self.log_std_min = float(config.log_std_min)
        self.log_std_max = float(config.log_std_max)
        self.embed = nnx.Linear(feat, config.width, rngs=rngs)
        self.pos = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (config.context, config.width))
        )
        for i in range(config.layers):
            setattr(self, f"block_{i}", _Block(config.width, config.heads, rngs=rngs))
        self.ln_out = nnx.LayerNorm(config.width, rngs=rngs)
        zeros = nnx.initializers.zeros_init()  # a fresh model: next = current, log-std ~ -0.3
        self.head = nnx.Linear(config.width, 2 * feat, kernel_init=zeros, rngs=rngs)

    def __call__(self, tokens, valid=None, dropout_key=None):
        t = tokens.shape[-2]
        causal = jnp.tril(jnp.ones((t, t), bool))
        if valid is None:
            allowed = causal
        else:
            allowed = causal & (valid[..., None, :].astype(bool) | jnp.eye(t, dtype=bool))
        keys = [None] * (2 * self.num_layers)
        if dropout_key is not None and self.rate > 0.0:
            keys = list(jax.random.split(dropout_key, 2 * self.num_layers))
        x = self.embed(tokens) + self.pos[...][:t]
        for i in range(self.num_layers):
            x = getattr(self, f"block_{i}")(x, allowed, self.rate, keys[2 * i : 2 * i + 2])
        return self._output(tokens, x)

    def _output(self, tokens, x):
        delta, raw = jnp.split(self.head(self.ln_out(x)), 2, axis=-1)
        log_std = self.log_std_max - jax.nn.softplus(self.log_std_max - raw)
        return tokens + delta, self.log_std_min + jax.nn.softplus(log_std - self.log_std_min)

    def empty_cache(self, batch: int, length: int) -> list[tuple[jax.Array, jax.Array]]:
        """Zero key/value buffers for ``step``: per layer ``(keys, values)``, each
        ``(batch, length, heads, width / heads)`` with ``length <= context``."""
        attn = self.block_0.attn
        width = self.embed.out_features
        shape = (batch, length, attn.heads, width // attn.heads)
        return [(jnp.zeros(shape, jnp.float32),) * 2 for _ in range(self.num_layers)]

    def step(self, token, pos, cache):
        """Incremental decoding: ``__call__``'s output at position ``pos`` for one new
        standardised token ``token (B, D + 1)``, every step valid, no dropout.

        ``cache`` (``empty_cache``) holds each layer's keys and values of positions ``< pos``;
        returns ``(mean (B, D + 1), log_std (B, D + 1), cache)`` with position ``pos`` added.
        Feeding positions ``0, 1, ...`` in turn gives ``__call__(tokens)[:, pos]`` at each (up to
        float rounding: the same operations on other shapes) with one token through the
        network per call.
        """
        x = self.embed(token) + jax.lax.dynamic_index_in_dim(self.pos[...], pos, keepdims=False)
        new = []
        for i in range(self.num_layers):
            x, c = getattr(self, f"block_{i}").step(x, cache[i], pos)
            new.append(c)
        mean, log_std = self._output(token, x)
        return mean, log_std, new


@functools.cache
def proposer_graphdef(config: ProposerConfig) -> nnx.GraphDef:
    """The (static) graphdef of ``ProposerNet(config)``, without materialising parameters."""
    return jax.eval_shape(lambda: nnx.split(ProposerNet(config, rngs=nnx.Rngs(0))))[0]


def _init_net(key: jax.Array, config: ProposerConfig) -> Params:
    return _jitted_init(config)(key)


@functools.cache
def _jitted_init(config: ProposerConfig):
    """One compiled initialiser per config (eager layer-by-layer init is slow)."""
    return jax.jit(lambda key: _fit.split_pure(ProposerNet(config, rngs=nnx.Rngs(params=key)))[1])


def init_proposer(key: jax.Array, config: ProposerConfig) -> tuple[nnx.GraphDef, Params]:
    """A fresh proposer: ``(graphdef, params)`` with identity normalisation (mean 0, std 1).

    ``key`` may be traced (jit / vmap over keys).
    """
    feat = config.obs_dim + 1
    norm = {"mean": jnp.zeros((feat,), jnp.float32), "std": jnp.ones((feat,), jnp.float32)}
    return proposer_graphdef(config), {"net": _init_net(key, config), "norm": norm}


def _tokens(obs: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.concatenate(
        [jnp.asarray(obs, jnp.float32), jnp.asarray(labels, jnp.float32)[..., None]], axis=-1
    )


def _net(config: ProposerConfig, net_params: Params) -> ProposerNet:
    return nnx.merge(proposer_graphdef(config), net_params)


def proposer_apply(
    config: ProposerConfig,
    params: Params,
    obs: jax.Array,
    labels: jax.Array,
    valid: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The predicted distribution of the NEXT step at every position, in data units.

    Args:
      obs: ``(..., T, D)`` with ``T <= context``; labels: ``(..., T)``; valid: ``(..., T)`` or
        None (all valid).

    Returns:
      ``(obs_mean (..., T, D), label_mean (..., T), obs_std (..., T, D), label_std (..., T))``:
      row ``t`` is the Gaussian of step ``t + 1`` given steps ``<= t``.
    """
    norm = params["norm"]
    x = (_tokens(obs, labels) - norm["mean"]) / norm["std"]
    mean, log_std = _net(config, params["net"])(x, valid)
    mean = mean * norm["std"] + norm["mean"]
    std = jnp.exp(log_std) * norm["std"]
    return mean[..., :-1], mean[..., -1], std[..., :-1], std[..., -1]


def _windows(key, x, m, rows, width):
    """Random windows of ``width`` steps of the rows ``rows`` of ``x (N, L, F)``/``m (N, L)``."""
    length = x.shape[1]
    starts = jax.random.randint(key, rows.shape, 0, length - width + 1)

    def one(r, s):
        xw = jax.lax.dynamic_slice_in_dim(x[r], s, width, axis=0)
        mw = jax.lax.dynamic_slice_in_dim(m[r], s, width, axis=0)
        return xw, mw

    return jax.vmap(one)(rows, starts)


def _nll(net: ProposerNet, x, m, dropout_key=None) -> jax.Array:
    """Mean Gaussian NLL per feature of each next token given the previous ones, over the
    positions whose step and next step are both valid (standardised units)."""
    mean, log_std = net(x, m, dropout_key)
    target, mean, log_std = x[..., 1:, :], mean[..., :-1, :], log_std[..., :-1, :]
    z = (target - mean) * jnp.exp(-log_std)
    nll = jnp.mean(0.5 * z**2 + log_std + 0.5 * math.log(2 * math.pi), axis=-1)
    pair = m[..., :-1] & m[..., 1:]
    return _fit.masked_mean(nll, pair)


def _check_data(config, obs, labels, mask):
    if obs.ndim != 3 or obs.shape[-1] != config.obs_dim:
        raise ValueError(f"obs must be (N, L, obs_dim={config.obs_dim}), got {obs.shape}")
    if labels.shape != obs.shape[:2] or mask.shape != obs.shape[:2]:
        raise ValueError(
            f"labels and mask must be (N, L) = {obs.shape[:2]}, got {labels.shape}, {mask.shape}"
        )
    if obs.shape[1] < 2:
        raise ValueError(f"segments need at least 2 steps (a next token), got L = {obs.shape[1]}")


def proposer_loss(
    config: ProposerConfig, params: Params, obs: jax.Array, labels: jax.Array, mask: jax.Array
) -> jax.Array:
    """The training objective on whole segments: the mean per-feature Gaussian NLL (standardised
    units) of every valid next step. ``obs (N, L, D)`` with ``L <= context``, ``labels (N, L)``,
    ``mask (N, L)``."""
    _check_data(config, obs, labels, mask)
    norm = params["norm"]
    x = (_tokens(obs, labels) - norm["mean"]) / norm["std"]
    return _nll(_net(config, params["net"]), x, jnp.asarray(mask, bool))


def train_proposer(
    key: jax.Array,
    config: ProposerConfig,
    obs: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
) -> tuple[Params, jax.Array]:
    """Fit a fresh proposer to episode segments: ``(params, losses (train_steps,))``.

    Args:
      key: a ``jax.random.key`` (may be traced: vmap over keys trains several seeds at once).
      obs: ``(N, L, D)`` observations; labels: ``(N, L)`` conditioning labels; mask: ``(N, L)``
        valid steps (padding anywhere is fine: invalid steps are neither targets nor attended).

    Each of the ``train_steps`` Adam steps (one ``lax.scan``) draws ``batch_size`` segments
    (weighted by their valid transitions) and in each a random window of ``min(L, context)``
    steps, and minimises the Gaussian NLL of every valid next token. The normalisation
    statistics (``params["norm"]``) are the masked per-feature mean and std of the data; they
    are not trained. ``losses[i]`` is the minibatch loss before step ``i``.
    """
    obs, labels = jnp.asarray(obs, jnp.float32), jnp.asarray(labels, jnp.float32)
    mask = jnp.asarray(mask, bool)
    _check_data(config, obs, labels, mask)
    width = min(obs.shape[1], config.context)
    tokens = _tokens(obs, labels)
    mean, std = _fit.masked_mean_std(tokens, mask)
    x_all = (tokens - mean) / std
    row_weight = jnp.sum(mask[:, :-1] & mask[:, 1:], axis=1)
    k_init, k_fit = jax.random.split(key)
    graphdef = proposer_graphdef(config)

    def loss_fn(net_params, k, _):
        k_rows, k_win, k_drop = jax.random.split(k, 3)
        rows = _fit.sample_rows(k_rows, row_weight, config.batch_size)
        x, m = _windows(k_win, x_all, mask, rows, width)
        return _nll(nnx.merge(graphdef, net_params), x, m, k_drop)

    net_params, losses = _fit.fit(
        k_fit,
        _init_net(k_init, config),
        loss_fn,
        steps=config.train_steps,
        lr=config.lr,
        max_grad_norm=config.max_grad_norm,
    )
    return {"net": net_params, "norm": {"mean": mean, "std": std}}, losses


def _check_propose_args(horizon, obs0, label0):
    horizon = int(horizon)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return horizon, jnp.asarray(obs0, jnp.float32), jnp.asarray(label0, jnp.float32)


def _windowed_step(net, temperature):
    """One scan step of windowed sampling: the buffer ``(B, context, F)`` holds the last
    ``context`` tokens; the next is drawn from the last position's Gaussian and shifted in."""

    def step(buf, k):
        mean, log_std = net(buf)
        mean, log_std = mean[:, -1], log_std[:, -1]
        new = mean + temperature * jnp.exp(log_std) * jax.random.normal(k, mean.shape)
        return jnp.roll(buf, -1, axis=1).at[:, -1].set(new), new

    return step


def _finish(x0, rest, norm, obs0, label0):
    """Stack ``x0 (B, F)`` and the sampled ``rest (H - 1, B, F)`` into ``(plans, labels)``."""
    x = jnp.concatenate([x0[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)
    x = x * norm["std"] + norm["mean"]
    plans = x[..., :-1].at[:, 0].set(obs0)  # exactly the given observation
    labels = x[..., -1].at[:, 0].set(label0)
    return plans, labels


def propose(
    config: ProposerConfig,
    params: Params,
    key: jax.Array,
    obs0: jax.Array,
    label0: jax.Array,
    horizon: int,
    temperature: float | jax.Array = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Sample plans autoregressively from the current observation and label.

    Args:
      obs0: ``(B, D)`` current observations (or ``(D,)``: then the outputs lose the ``B`` axis);
      label0: ``(B,)`` (or ``()``) their conditioning labels;
      horizon: H, static; temperature: scale of the sampled noise (0: the predicted means; may
        be traced).

    Returns:
      ``(plans (B, H, D), labels (B, H))`` with ``plans[:, 0] == obs0`` and
      ``labels[:, 0] == label0``. Step ``i`` is drawn from the Gaussian predicted from steps
      ``< i`` (``jax.random.split(key, H - 1)[i - 1]`` draws its noise).

    The first ``min(context, H) - 1`` steps are decoded incrementally with a key/value cache
    (``ProposerNet.step``): fixed buffers of ``min(context, H)`` slots per layer, later slots
    masked, one ``lax.scan``; each step runs only the newest token through the network. Once
    ``context`` tokens exist (``H > context`` only), the model reads a sliding window of the
    last ``context`` tokens with positions ``0 .. context - 1`` -- the window it was trained on
    -- which a rolling cache cannot reuse (every token's position, hence its keys and values,
    changes when the window moves), so those ``H - context`` steps recompute the window: a
    second ``lax.scan``. Shapes never grow; jit- and vmap-able. The result equals the plain
    windowed recompute of every step (``_propose_reference``) up to float rounding.
    """
    horizon, obs0, label0 = _check_propose_args(horizon, obs0, label0)
    if obs0.ndim == 1:
        plans, labels = propose(config, params, key, obs0[None], label0[None], horizon, temperature)
        return plans[0], labels[0]
    norm = params["norm"]
    net = _net(config, params["net"])
    x0 = (_tokens(obs0, label0) - norm["mean"]) / norm["std"]  # (B, F)
    size = min(config.context, horizon)
    keys = jax.random.split(key, horizon - 1)

    def cached(carry, xs):
        prev, cache = carry
        pos, k = xs  # feed step pos, draw step pos + 1
        mean, log_std, cache = net.step(prev, pos, cache)
        new = mean + temperature * jnp.exp(log_std) * jax.random.normal(k, mean.shape)
        return (new, cache), new

    cache = net.empty_cache(x0.shape[0], size)
    _, rest = jax.lax.scan(cached, (x0, cache), (jnp.arange(size - 1), keys[: size - 1]))
    if horizon > size:  # the window is full: slide it (recompute, see above)
        buf = jnp.concatenate([x0[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)  # (B, ctx, F)
        _, more = jax.lax.scan(_windowed_step(net, temperature), buf, keys[size - 1 :])
        rest = jnp.concatenate([rest, more], axis=0)
    return _finish(x0, rest, norm, obs0, label0)


def _propose_reference(
    config: ProposerConfig,
    params: Params,
    key: jax.Array,
    obs0: jax.Array,
    label0: jax.Array,
    horizon: int,
    temperature: float | jax.Array = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """``propose`` without the cache, for tests: every step runs the whole buffer of the last
    ``min(context, H)`` tokens (filled left to right, then shifted) through the network and
    reads the newest position. ``obs0 (B, D)``, ``label0 (B,)``."""
    horizon, obs0, label0 = _check_propose_args(horizon, obs0, label0)
    norm = params["norm"]
    net = _net(config, params["net"])
    x0 = (_tokens(obs0, label0) - norm["mean"]) / norm["std"]  # (B, F)
    size = min(config.context, horizon)
    buf = jnp.zeros((x0.shape[0], size, x0.shape[1]), jnp.float32).at[:, 0].set(x0)

    def step(buf, xs):
        i, k = xs  # generating step i from steps < i
        read = jnp.minimum(i, size) - 1  # the buffer position of step i - 1
        mean, log_std = net(buf)  # causal: the unfilled positions after `read` are not seen
        mean = jax.lax.dynamic_index_in_dim(mean, read, axis=1, keepdims=False)
        log_std = jax.lax.dynamic_index_in_dim(log_std, read, axis=1, keepdims=False)
        new = mean + temperature * jnp.exp(log_std) * jax.random.normal(k, mean.shape)
        filling = jax.lax.dynamic_update_index_in_dim(buf, new, jnp.minimum(i, size - 1), axis=1)
        shifted = jnp.roll(buf, -1, axis=1).at[:, -1].set(new)
        return jnp.where(i < size, filling, shifted), new

    steps = (jnp.arange(1, horizon), jax.random.split(key, horizon - 1))
    _, rest = jax.lax.scan(step, buf, steps)  # (H - 1, B, F)
    return _finish(x0, rest, norm, obs0, label0)


__all__ = [
    "CausalSelfAttention",
    "ProposerConfig",
    "ProposerNet",
    "init_proposer",
    "proposer_apply",
    "proposer_graphdef",
    "proposer_loss",
    "propose",
    "train_proposer",
]
