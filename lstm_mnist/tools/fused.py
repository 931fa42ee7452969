"""M models of one shape trained as one model: the LSTM classifier written as per-time-step batched matmuls
over [M·D, B, 4H] (HFTA's way, MLSys 2021). A speed probe, not the training path: nn.LSTM cannot be stacked
and torch.vmap does not work over it, so the recurrence is spelled out here with PyTorch's gate order
(i, f, g, o) and weight layout, and `load` copies M trained LSTMClassifiers into it exactly.

Each model keeps its own parameters, batch and loss; the summed loss gives every model the gradient it
would get alone, and AdamW is elementwise, so one fused step is M independent steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FusedLSTMClassifier(nn.Module):
    def __init__(self, models: int, hidden: int, layers: int, bidirectional: bool, dropout: float,
                 readout: str = "final_states", input_size: int = 28, n_classes: int = 10):
        super().__init__()
        self.m, self.hidden, self.layers, self.dropout, self.readout = models, hidden, layers, dropout, readout
        self.directions = 2 if bidirectional else 1
        md, h4 = models * self.directions, 4 * hidden
        sizes = [input_size] + [hidden * self.directions] * (layers - 1)
        # One stack per layer; along the first axis the forward direction of models 0..M-1, then the backward.
        self.w_ih = nn.ParameterList([nn.Parameter(torch.empty(md, n_in, h4)) for n_in in sizes])  # (MD, in, 4H)
        self.w_hh = nn.ParameterList([nn.Parameter(torch.empty(md, hidden, h4)) for _ in sizes])  # (MD, H, 4H)
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(md, 1, h4)) for _ in sizes])       # b_ih + b_hh
        self.head_w = nn.Parameter(torch.empty(models, hidden * self.directions, n_classes))     # (M, DH, 10)
        self.head_b = nn.Parameter(torch.zeros(models, 1, n_classes))
        bound = hidden ** -0.5  # nn.LSTM's uniform bound, for the head too; biases start at 0 (speed, not accuracy)
        for p in [*self.w_ih, *self.w_hh, self.head_w]:
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (M, B, 28 steps, 28 px) -> logits (M, B, 10)."""
        m, b, t, _ = x.shape
        seq, finals = x, None
        for layer in range(self.layers):
            if layer and self.training and self.dropout:
                seq = F.dropout(seq, self.dropout)  # nn.LSTM's dropout between stacked layers
            seq, finals = self._layer(seq, layer)  # (M, B, T, D*H), (M, B, D*H)
        feat = finals if self.readout == "final_states" else seq[:, :, -1]  # (M, B, D*H)
        feat = F.dropout(feat, self.dropout, self.training)
        return torch.baddbmm(self.head_b, feat, self.head_w)  # (M, B, DH) @ (M, DH, 10) -> (M, B, 10)

    def _layer(self, seq: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        m, b, t, n_in = seq.shape
        if self.directions == 2:
            seq = torch.cat([seq, seq.flip(2)], 0)  # (M, B, T, in) -> (2M, B, T, in); the backward half reversed
        md = seq.shape[0]
        # Every time step's input projection in one batched matmul: (MD, B*T, in) @ (MD, in, 4H)
        xp = torch.baddbmm(self.bias[layer], seq.reshape(md, b * t, n_in), self.w_ih[layer]).view(md, b, t, -1)
        h = seq.new_zeros(md, b, self.hidden)
        c = seq.new_zeros(md, b, self.hidden)
        outs = []
        for step in range(t):
            gates = torch.baddbmm(xp[:, :, step], h, self.w_hh[layer])  # (MD, B, 4H)
            i, f, g, o = gates.chunk(4, dim=2)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        out = torch.stack(outs, 2)  # (MD, B, T, H)
        if self.directions == 1:
            return out, h
        fwd, bwd = out[:m], out[m:].flip(2)  # the backward half back in time order
        return torch.cat([fwd, bwd], 3), torch.cat([h[:m], h[m:]], 2)  # (M, B, T, 2H), (M, B, 2H)

    @torch.no_grad()
    def load(self, nets: list) -> "FusedLSTMClassifier":
        """Copy M LSTMClassifiers (builtin/model.py) of this shape into the stacks."""
        if len(nets) != self.m:
            raise ValueError(f"{len(nets)} models for a fusion of {self.m}")
        for layer in range(self.layers):
            for d, suffix in enumerate(["", "_reverse"][: self.directions]):
                for i, net in enumerate(nets):
                    k = d * self.m + i
                    lstm = net.lstm
                    self.w_ih[layer][k] = getattr(lstm, f"weight_ih_l{layer}{suffix}").T
                    self.w_hh[layer][k] = getattr(lstm, f"weight_hh_l{layer}{suffix}").T
                    self.bias[layer][k, 0] = (getattr(lstm, f"bias_ih_l{layer}{suffix}")
                                              + getattr(lstm, f"bias_hh_l{layer}{suffix}"))
        for i, net in enumerate(nets):
            self.head_w[i] = net.head.weight.T
            self.head_b[i, 0] = net.head.bias
        return self


def build(cfg, models: int) -> FusedLSTMClassifier:
    """M copies of the config's model shape (builtin/model.build's arguments)."""
    return FusedLSTMClassifier(models, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.effective_dropout,
                               cfg.readout)


def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each model's mean cross-entropy, summed: (M, B, 10), (M, B) -> scalar."""
    m, b, k = logits.shape
    return F.cross_entropy(logits.reshape(m * b, k), y.reshape(m * b), reduction="sum") / b
