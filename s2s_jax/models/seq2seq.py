"""The recurrent encoder-decoder (LSTM or GRU cells, `model.cell`).

`Seq2Seq` exposes three entry points:
- `__call__(src, tgt_in)`: teacher-forced logits for training (optionally with
  scheduled sampling);
- `encode(src) -> (memory, state)`: what the decoder needs, batch-leading;
- `decode_step(memory, state, tokens) -> (logits, state)`: one output step,
  the contract `s2s_jax.decoding.search` searches with.

`make_model(config, ...)` builds one from a run's config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.data.tokenizer import BOS_ID, PAD_ID
from s2s_jax.kernels import int8
from s2s_jax.models import int8_weights, recurrences, time_segments
from s2s_jax.models.attention import Attention
from s2s_jax.models.gru import GRULayer
from s2s_jax.models.lstm import LSTMLayer, reverse_padded
from s2s_jax.models.time_segments import BatchSegments, Segments

State = dict[str, Any]  # {"carries": one carry per decoder layer, "feed": previous attentional vector}
Memory = dict[str, jax.Array]  # context, src_mask and, with attention, keys and values


@dataclasses.dataclass(frozen=True)
class Cell:
    """A recurrent cell kind: its layer module and how to read h from its carry."""

    layer: type[nn.Module]  # (inputs [B, T, D], mask [B, T], initial carry) -> (outputs [B, T, H], carry)
    hidden: Any  # carry -> h [B, H]


# Recurrent cells by config name (`model.cell`). An LSTM carry is (c, h), a GRU carry is h.
CELLS: dict[str, Cell] = {
    "lstm": Cell(LSTMLayer, lambda carry: carry[1]),
    "gru": Cell(GRULayer, lambda carry: carry),
}


# Compute dtypes by config name (`train.dtype`); parameters and optimizer state stay float32.
DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static model hyper-parameters (hashable, so modules can hold it)."""

    src_vocab_size: int
    tgt_vocab_size: int
    emb_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.2
    bidirectional: bool = False
    feed_context: bool = False
    tie_embeddings: bool = False
    attention: str = "none"  # none | bahdanau | luong_dot | luong_general
    input_feeding: bool = False  # feed the previous attentional vector to the next step
    scan_unroll: int = 1
    cell: str = "lstm"  # lstm | gru: CELLS
    dtype: Any = jnp.float32
    recurrence: str = "scan"  # scan | fused, resolved from `model.recurrence` (s2s_jax.models.recurrences)
    int8: bool = False  # int8 weight matrices for CPU serving (s2s_jax/models/int8_weights.py), set at load time
    never_output: tuple[int, ...] = ()  # target ids besides <pad> and <bos> never output: a run's language tags

    @property
    def not_output(self) -> tuple[int, ...]:
        """Target ids a search never outputs: <pad>, <bos> and `never_output`."""
        return (PAD_ID, BOS_ID, *self.never_output)

    @property
    def fused(self) -> bool:
        """The recurrences run in the fused CPU kernel, which skips each row's padding itself."""
        return self.recurrence == "fused"

    @classmethod
    def from_config(
        cls,
        model_cfg,
        src_vocab_size: int,
        tgt_vocab_size: int,
        dtype=jnp.float32,
        never_output: tuple[int, ...] = (),
        strict: bool = True,
    ):
        """Builds from the `model` section of an ml_collections config; `strict`: as
        `recurrences.resolve` (False for a trained model loaded to translate)."""
        return cls(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            emb_dim=model_cfg.emb_dim,
            hidden_size=model_cfg.hidden_size,
            num_layers=model_cfg.num_layers,
            dropout=model_cfg.dropout,
            bidirectional=model_cfg.bidirectional,
            feed_context=model_cfg.feed_context,
            tie_embeddings=model_cfg.tie_embeddings,
            attention=model_cfg.attention,
            input_feeding=model_cfg.input_feeding,
            scan_unroll=model_cfg.scan_unroll,
            cell=model_cfg.get("cell", "lstm"),  # workdirs from before GRU have no model.cell
            dtype=dtype,
            recurrence=recurrences.resolve(model_cfg.get("recurrence", "auto"), dtype, strict),
            never_output=tuple(never_output),
        )


class Encoder(nn.Module):
    """Embedding + stacked (optionally bidirectional) recurrent layers over the real source tokens."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self, src: jax.Array, *, train: bool, segments: Segments | None = None
    ) -> tuple[jax.Array, list, jax.Array]:
        """-> (outputs [B, S, H or 2H], final carry per layer, source mask). With `segments` (the
        batch's time-segment profile), rows run longest first and skip their padded steps."""
        cfg = self.config
        src = jnp.asarray(src)
        original_mask = src != PAD_ID
        if cfg.fused:
            segments = None  # the kernel stops each row at its length
        if segments is not None:
            order, inverse = time_segments.sort_order(original_mask.sum(axis=1))
            src = src[order]
        mask = src != PAD_ID
        lengths = mask.sum(axis=1)
        x = nn.Embed(cfg.src_vocab_size, cfg.emb_dim, name="embed")(src).astype(cfg.dtype)
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        carries = []
        layer_type = CELLS[cfg.cell].layer
        for layer in range(cfg.num_layers):
            if layer > 0:
                x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
            make = lambda name: layer_type(cfg.hidden_size, cfg.scan_unroll, cfg.dtype, cfg.fused, cfg.int8, name=name)  # noqa: E731
            fwd_out, fwd_carry = make(f"layer_{layer}")(x, mask, segments=segments)
            if cfg.bidirectional:
                bwd_out, bwd_carry = make(f"layer_{layer}_bwd")(reverse_padded(x, lengths), mask, segments=segments)
                x = jnp.concatenate([fwd_out, reverse_padded(bwd_out, lengths)], axis=-1)
                carries.append((fwd_carry, bwd_carry))
            else:
                x = fwd_out
                carries.append(fwd_carry)
        if segments is not None:
            x = x[inverse]
            carries = jax.tree.map(lambda a: a[inverse], carries)
        return x, carries, original_mask


class Bridge(nn.Module):
    """Maps the bidirectional encoder's two final states per layer to one decoder state.

    A learned tanh projection of [forward; backward] h (and, for an LSTM, a linear one of
    the cells c), as in JoeyNMT/OpenNMT; a unidirectional encoder's states pass through unchanged.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, carries: list) -> tuple:
        cfg = self.config
        if not cfg.bidirectional:
            return tuple(carries)
        hidden = CELLS[cfg.cell].hidden
        state = []
        for layer, (fwd, bwd) in enumerate(carries):
            dense = lambda name: int8_weights.dense(cfg.hidden_size, int8_weights=cfg.int8, name=name)  # noqa: E731
            h = jnp.tanh(dense(f"h_{layer}")(jnp.concatenate([hidden(fwd), hidden(bwd)], -1)))
            if cfg.cell == "lstm":
                c = dense(f"c_{layer}")(jnp.concatenate([fwd[0], bwd[0]], -1))
                state.append((c, h))
            else:
                state.append(h)
        return tuple(state)


class Decoder(nn.Module):
    """Stacked recurrent decoder, optional global attention, dense softmax over the target vocabulary.

    With `feed_context`, the encoder's top-layer final hidden state is
    concatenated to every input embedding (the d2l formulation
    s_t = g(y_{t-1}, c, s_{t-1})). With attention (JoeyNMT/Luong layout) the
    top hidden state h_t queries the encoder states and the attentional vector
    tanh(W_c [context; h_t]) feeds the output layer; with `input_feeding` it is
    also concatenated to the next step's input, which forces a step-by-step loop.
    """

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embed = nn.Embed(cfg.tgt_vocab_size, cfg.emb_dim, name="embed")
        self.layers = [
            CELLS[cfg.cell].layer(cfg.hidden_size, cfg.scan_unroll, cfg.dtype, cfg.fused, cfg.int8, name=f"layer_{i}")
            for i in range(cfg.num_layers)
        ]
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.attention != "none":
            self.attention = Attention(cfg.attention, cfg.hidden_size, cfg.dtype, cfg.int8, name="attention")
            self.combine = int8_weights.dense(
                cfg.hidden_size, int8_weights=cfg.int8, use_bias=False, dtype=cfg.dtype, name="combine"
            )
        if cfg.tie_embeddings and cfg.hidden_size != cfg.emb_dim:
            self.pre_output = int8_weights.dense(cfg.emb_dim, int8_weights=cfg.int8, dtype=cfg.dtype, name="pre_output")
        if not cfg.tie_embeddings:
            self.output = int8_weights.dense(cfg.tgt_vocab_size, int8_weights=cfg.int8, dtype=cfg.dtype, name="output")
        elif cfg.int8:  # embedding^T as an int8 matrix of its own; the table stays float32 for lookups
            self.tied_output = int8_weights.Int8Dense(cfg.tgt_vocab_size, use_bias=False, name=int8_weights.TIED_OUTPUT)

    @property
    def uses_feed(self) -> bool:
        return self.config.attention != "none" and self.config.input_feeding

    def _inputs(self, tokens: jax.Array, memory: Memory) -> jax.Array:
        x = self.embed(tokens).astype(self.config.dtype)
        if self.config.feed_context:
            context = jnp.broadcast_to(memory["context"][:, None, :], x.shape[:2] + memory["context"].shape[-1:])
            x = jnp.concatenate([x, context.astype(x.dtype)], axis=-1)
        return x

    def project(self, h: jax.Array, output: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        """The output layer: top vectors [..., H] -> float32 logits [..., V]; with `output` (an
        `output_layer` for S ids) only those columns, [..., S]."""
        if self.config.tie_embeddings:
            if self.config.hidden_size != self.config.emb_dim:
                h = self.pre_output(h)
            if output is not None:
                return self._restricted(h, output, jnp.float32)
            if self.config.int8:
                return self.tied_output(h)
            return self.embed.attend(h.astype(jnp.float32))
        if output is not None:
            return self._restricted(h, output, self.config.dtype)
        return self.output(h).astype(jnp.float32)

    @staticmethod
    def _restricted(h: jax.Array, output: tuple, dtype: Any) -> jax.Array:
        """h @ an `output_layer` (float, or int8 for an int8 model) + its bias, float32 logits [..., S]."""
        kernel, bias = output
        if isinstance(kernel, int8.Int8Matrix):
            return int8.matmul(h.astype(jnp.float32), kernel) + bias
        return (h.astype(dtype) @ kernel.astype(dtype) + bias).astype(jnp.float32)

    def output_layer(self, ids: jax.Array) -> tuple[jax.Array | int8.Int8Matrix, jax.Array]:
        """The output layer's columns for target `ids` [S]: (kernel [E or H, S], bias [S]), what
        `project` reads instead of the whole layer (a vocabulary shortlist); an int8 model's kernel
        is those columns of its int8 matrix, with their scales."""
        cfg = self.config
        if cfg.int8:
            params = (self.tied_output if cfg.tie_embeddings else self.output).variables["params"]
            rows = cfg.emb_dim if cfg.tie_embeddings else cfg.hidden_size
            kernel = int8.Int8Matrix(params["kernel_int8"][:, ids], params["kernel_scale"][ids], k=rows)
            bias = jnp.zeros(ids.shape, jnp.float32) if cfg.tie_embeddings else params["bias"][ids]
            return kernel, bias
        if cfg.tie_embeddings:
            kernel = jnp.asarray(self.embed.embedding, jnp.float32)[ids].T
            return kernel, jnp.zeros(ids.shape, jnp.float32)
        params = self.output.variables["params"]
        return params["kernel"][:, ids], params["bias"][ids].astype(cfg.dtype)

    def _logits(self, h: jax.Array, train: bool) -> jax.Array:
        return self.project(self.dropout(h, deterministic=not train))

    def _run(
        self,
        x: jax.Array,
        memory: Memory,
        state: State,
        train: bool,
        segments: Segments | None = None,
        mask: jax.Array | None = None,
    ):
        """Recurrent layers (+ attention) over inputs x [B, T, D] -> (top vectors [B, T, H], state, weights).

        With `segments` the rows are sorted longest first and the layers skip the steps past them;
        with a `mask` (the fused kernels) each row stops at its last real input."""
        if self.uses_feed:
            x = jnp.concatenate(
                [x, jnp.broadcast_to(state["feed"][:, None, :], x.shape[:2] + state["feed"].shape[-1:])], -1
            )
        x = self.dropout(x, deterministic=not train)
        carries = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x, deterministic=not train)
            x, carry = layer(x, mask, state["carries"][i], segments=segments)
            carries.append(carry)
        new_state = {"carries": tuple(carries)}
        weights = None
        if self.config.attention != "none":
            context, weights = self.attention(x, memory["keys"], memory["values"], memory["src_mask"])
            x = jnp.tanh(self.combine(jnp.concatenate([context.astype(x.dtype), x], -1)))
            if self.uses_feed:
                new_state["feed"] = x[:, -1]
        return x, new_state, weights

    def __call__(
        self,
        tokens: jax.Array,
        memory: Memory,
        state: State,
        *,
        train: bool,
        features: bool = False,
        segments: Segments | None = None,
    ) -> tuple[jax.Array, State, jax.Array | None]:
        """Runs over [B, T] input tokens -> (float32 logits [B, T, V], new state, attention [B, T, S] or None).

        With `features`, returns the (dropped-out) vectors the output layer
        would read instead of logits, for losses that project only real positions.
        With `segments` (the tokens' time-segment profile; not with input feeding, whose loop
        runs step by step) the recurrences skip the padded steps: the outputs at real positions
        are unchanged, the state returned is then each row's state after its last real token.
        The fused recurrences always stop each row at its last real token (PAD-free prefix).
        """
        finish = (
            (lambda h: self.dropout(h, deterministic=not train)) if features else (lambda h: self._logits(h, train))
        )
        x = self._inputs(tokens, memory)
        if not self.uses_feed or tokens.shape[1] == 1:
            if self.config.fused and tokens.shape[1] > 1:
                h, state, weights = self._run(x, memory, state, train, mask=jnp.asarray(tokens) != PAD_ID)
            elif segments is None or tokens.shape[1] == 1:
                h, state, weights = self._run(x, memory, state, train)
            else:
                order, inverse = time_segments.sort_order((jnp.asarray(tokens) != PAD_ID).sum(axis=1))
                take = lambda tree, rows: jax.tree.map(lambda a: a[rows], tree)  # noqa: E731
                h, state, weights = self._run(x[order], take(memory, order), take(state, order), train, segments)
                h, state, weights = h[inverse], take(state, inverse), take(weights, inverse)
            return finish(h), state, weights

        def step(decoder, carry, x_t):
            h, carry, weights = decoder._run(x_t[:, None], memory, carry, train)
            return carry, (h[:, 0], None if weights is None else weights[:, 0])

        scan = nn.scan(
            step,
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
            in_axes=1,
            out_axes=1,
        )
        state, (h, weights) = scan(self, state, x)
        return finish(h), state, weights


class Seq2Seq(nn.Module):
    """Recurrent encoder-decoder; see the module docstring for its entry points."""

    config: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.config, name="encoder")
        self.bridge = Bridge(self.config, name="bridge")
        self.decoder = Decoder(self.config, name="decoder")

    def encode(self, src: jax.Array, *, train: bool = False, segments: Segments | None = None) -> tuple[Memory, State]:
        """The decoder's memory and initial state; `segments`: the source's time-segment profile
        (s2s_jax.models.time_segments), which skips padded encoder steps without changing the result."""
        outputs, carries, mask = self.encoder(src, train=train, segments=segments)
        carries = self.bridge(carries)
        memory = {"context": CELLS[self.config.cell].hidden(carries[-1]), "src_mask": mask}
        state: State = {"carries": carries}
        if self.config.attention != "none":
            memory["values"] = outputs
            memory["keys"] = self.decoder.attention.keys(outputs)
            if self.config.input_feeding:
                state["feed"] = jnp.zeros((src.shape[0], self.config.hidden_size), self.config.dtype)
        return memory, state

    def decode_step(
        self, memory: Memory, state: State, tokens: jax.Array, *, train: bool = False, output=None
    ) -> tuple[jax.Array, State]:
        """One decoder step: tokens [B] -> float32 logits [B, V].

        <pad>, <bos> and a multilingual run's language tags are never valid outputs
        (`ModelConfig.not_output`), so their logits are pushed to -1e9 here (not in training,
        where label smoothing must stay finite).
        With `output` (`output_layer(ids)` for S target ids, gathered once per batch) the logits are
        those ids' alone, [B, S], unmasked: the caller maps them back (s2s_jax/decoding/shortlist.py).
        """
        if output is not None:
            h, state, _ = self.decoder(tokens[:, None], memory, state, train=train, features=True)
            return self.decoder.project(h[:, 0], output), state
        logits, state, _ = self.decoder(tokens[:, None], memory, state, train=train)
        logits = logits[:, 0].at[:, jnp.array(self.config.not_output)].set(-1e9)
        return logits, state

    def features(
        self, src: jax.Array, tgt_in: jax.Array, *, train: bool = False, segments: BatchSegments | None = None
    ) -> jax.Array:
        """Teacher-forced output-layer inputs [B, T, H]; `project` turns them into logits. `segments`:
        the (source, target) time-segment profiles (time_segments.for_batch), skipping padded steps."""
        src_segments, tgt_segments = segments or (None, None)
        memory, state = self.encode(src, train=train, segments=src_segments)
        h, _, _ = self.decoder(tgt_in, memory, state, train=train, features=True, segments=tgt_segments)
        return h

    def project(self, h: jax.Array) -> jax.Array:
        """The output layer alone: [..., H] -> float32 logits [..., V]."""
        return self.decoder.project(h)

    def output_layer(self, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The output layer's (kernel [E or H, S], bias [S]) for target `ids` [S]: `decode_step`'s `output`."""
        return self.decoder.output_layer(ids)

    def attention_weights(self, src: jax.Array, tgt_in: jax.Array) -> jax.Array:
        """Teacher-forced attention weights [B, T, S] (for heatmaps of a known output)."""
        memory, state = self.encode(src)
        _, _, weights = self.decoder(tgt_in, memory, state, train=False)
        return weights

    def __call__(
        self,
        src: jax.Array,
        tgt_in: jax.Array,
        *,
        train: bool = False,
        teacher_forcing_ratio: float = 1.0,
        segments: BatchSegments | None = None,
    ) -> jax.Array:
        """Logits [B, T, V] for the target given its shifted-right input `tgt_in`.

        With `teacher_forcing_ratio` < 1 (training only), each step's input is
        the gold token with that probability and otherwise the model's own
        greedy prediction from the previous step (scheduled sampling, drawn
        from the 'sampling' PRNG stream).
        """
        src_segments, tgt_segments = segments or (None, None)
        memory, state = self.encode(src, train=train, segments=src_segments)
        if teacher_forcing_ratio >= 1.0 or not train:
            logits, _, _ = self.decoder(tgt_in, memory, state, train=train, segments=tgt_segments)
            return logits
        use_gold = jax.random.bernoulli(self.make_rng("sampling"), teacher_forcing_ratio, tgt_in.shape)
        use_gold = use_gold.at[:, 0].set(True)  # the first input is always <bos>

        def step(decoder, carry, inputs):
            dec_state, prev_pred = carry
            gold, gold_here = inputs
            tokens = jnp.where(gold_here, gold, prev_pred)
            logits, dec_state, _ = decoder(tokens[:, None], memory, dec_state, train=train)
            logits = logits[:, 0]
            prediction = jnp.argmax(logits.at[:, jnp.array(self.config.not_output)].set(-1e9), -1)
            prediction = prediction.astype(tgt_in.dtype)
            return (dec_state, prediction), logits

        scan = nn.scan(
            step,
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
            in_axes=1,
            out_axes=1,
        )
        _, logits = scan(self.decoder, (state, tgt_in[:, 0]), (tgt_in, use_gold))
        return logits


def make_model(
    config, src_vocab_size: int, tgt_vocab_size: int, never_output: tuple[int, ...] = (), strict: bool = True
) -> Seq2Seq:
    """The model a config describes, computing in its `train.dtype`; `never_output`: the target ids
    of its language tags (`RunLanguages.symbol_ids`), which no search outputs; `strict=False` for a
    trained model loaded to translate (`recurrences.resolve`)."""
    dtype = DTYPES[config.train.dtype]
    cfg = ModelConfig.from_config(config.model, src_vocab_size, tgt_vocab_size, dtype, never_output, strict)
    return Seq2Seq(cfg)
