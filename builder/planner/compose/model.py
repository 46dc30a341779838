"""The tree decoder: frozen MiniLM word states, a small word encoder, a GRU decoder with pointers.

Each word of the request is the mean of its MiniLM sub-token states plus an embedding of its
lexicon field (colour, shape, size, number or none); one transformer layer mixes them. The GRU
decoder writes the action sequence of ``grammar`` one action at a time: its input is the previous
action (a copied word enters as that word's state) and the context (which field of which operator
comes next); its output scores the fixed actions and, by attention, every word (pointer copying).
Scores are masked by ``grammar.allowed``, so only well-typed trees come out. A separate scope head
(the mean word state) estimates whether the request is one the language can express at all.
"""

from __future__ import annotations

import threading

import numpy as np

from builder.planner.compose import grammar as G
from builder.planner.semantic import minilm

FIELDS = (None, "color", "shape", "size", "number")
OUTPUTS = (None, "boxes", "count", "bool", "text", "choice")
CONFIG = {"d": 160, "heads": 4, "ff": 320, "layers": 2, "field_dim": 16, "dropout": 0.1}
MAX_TOKENS = 256  # MiniLM reads 512 positions; a request past 256 sub-words is refused, not cut

_CACHE: dict[tuple, np.ndarray] = {}
_LOCK = threading.Lock()


def word_states(word_lists: list[list[str]], batch_size: int = 64):
    """Per request, a float32 array [words, 384]: the mean MiniLM state of each word's sub-tokens.

    Raises ``ValueError`` for a request longer than ``MAX_TOKENS`` sub-words (never truncated).
    """
    tok, model, _, torch = minilm()
    keys = [tuple(ws) for ws in word_lists]
    with _LOCK:
        todo = [k for k in dict.fromkeys(keys) if k not in _CACHE]
    for i in range(0, len(todo), batch_size):
        chunk = [list(k) for k in todo[i:i + batch_size]]
        enc = tok(chunk, is_split_into_words=True, padding=True, truncation=False, return_tensors="pt")
        if enc["input_ids"].shape[1] > MAX_TOKENS:
            raise ValueError(f"a request of {enc['input_ids'].shape[1]} sub-words is longer than {MAX_TOKENS}")
        with torch.no_grad():
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        for b, words in enumerate(chunk):
            ids = np.array([-1 if w is None else w for w in enc.word_ids(b)])
            h = hidden[b].numpy()
            out = np.stack([h[ids == w].mean(0) for w in range(len(words))]).astype(np.float32)
            with _LOCK:
                if len(_CACHE) > 50_000:
                    _CACHE.clear()
                _CACHE[tuple(words)] = out
    with _LOCK:
        return [_CACHE[k] for k in keys]


def build_model(config: dict | None = None):
    """The decoder module (untrained) for ``CONFIG`` plus overrides."""
    import torch
    from torch import nn

    cfg = {**CONFIG, **(config or {})}
    d = cfg["d"]
    n_fixed = len(G.FIXED)

    class TreeDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.field = nn.Embedding(len(FIELDS), cfg["field_dim"])
            self.proj = nn.Linear(384 + cfg["field_dim"], d)
            layer = nn.TransformerEncoderLayer(d, cfg["heads"], cfg["ff"], cfg["dropout"], batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, cfg["layers"], enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            self.output = nn.Embedding(len(OUTPUTS), d)
            self.init = nn.Linear(2 * d, d)
            self.action = nn.Embedding(n_fixed + 2, d)  # fixed actions, COPY, START
            self.ctx = nn.Embedding(len(G.CONTEXTS), d)
            self.copied = nn.Linear(d, d)
            self.gru = nn.GRU(d, d, batch_first=True)
            self.attn = nn.Linear(d, d, bias=False)
            self.mix = nn.Linear(2 * d, d)
            self.fixed = nn.Linear(d, n_fixed)
            self.pointer = nn.Linear(d, d, bias=False)
            self.scope = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
            self.drop = nn.Dropout(cfg["dropout"])

        def encode(self, states, fields, mask, outputs):
            """(word memory [B, W, d], initial GRU state [1, B, d], scope logit [B])."""
            x = self.drop(self.proj(torch.cat([states, self.field(fields)], -1)))
            mem = self.norm(self.encoder(x, src_key_padding_mask=~mask))
            m = mask.unsqueeze(-1).float()
            pooled = (mem * m).sum(1) / m.sum(1).clamp(min=1)
            h0 = torch.tanh(self.init(torch.cat([pooled, self.output(outputs)], -1))).unsqueeze(0)
            return mem, h0, self.scope(pooled).squeeze(-1)

        def step_inputs(self, mem, prev, prev_pos, ctx):
            """Decoder inputs [B, S, d] from previous actions (COPY: the copied word) and contexts."""
            x = self.action(prev) + self.ctx(ctx)
            pos = prev_pos.clamp(min=0)
            word = torch.gather(mem, 1, pos.unsqueeze(-1).expand(-1, -1, mem.shape[-1]))
            return self.drop(x + self.copied(word) * (prev_pos >= 0).unsqueeze(-1).float())

        def scores(self, mem, mask, out):
            """Logits [B, S, fixed + W] from decoder outputs [B, S, d]."""
            att = torch.einsum("bsd,bwd->bsw", self.attn(out), mem).masked_fill(~mask.unsqueeze(1), -1e9)
            ctx = torch.einsum("bsw,bwd->bsd", att.softmax(-1), mem)
            o = torch.tanh(self.mix(torch.cat([out, ctx], -1)))
            copy = torch.einsum("bsd,bwd->bsw", self.pointer(o), mem) / d ** 0.5
            return torch.cat([self.fixed(o), copy], -1)

        def forward(self, states, fields, mask, outputs, prev, prev_pos, ctx):
            mem, h0, scope = self.encode(states, fields, mask, outputs)
            out, _ = self.gru(self.step_inputs(mem, prev, prev_pos, ctx), h0)
            return self.scores(mem, mask, out), scope

    model = TreeDecoder()
    model.config = cfg
    return model


COPY, START = len(G.FIXED), len(G.FIXED) + 1


def decoder_steps(gold: list[tuple[int, list[int]]], words: list[G.Word], root_types: tuple[str, ...]):
    """The model's steps for a gold sequence: (ctx, prev, prev_pos, fixed allowed, copy allowed, targets)
    for every step with a choice (forced steps are taken without the model, in training and decoding)."""
    state, prev, prev_pos, steps = G.start(root_types), START, -1, []
    for action, right in gold:
        fixed, copy = G.allowed(state, words)
        if len(fixed) + len(copy) > 1:
            steps.append((G.context(state), prev, prev_pos, fixed, copy, right))
        state = G.advance(state, action)
        prev, prev_pos = (COPY, action - COPY) if action >= COPY else (action, -1)
    return steps
