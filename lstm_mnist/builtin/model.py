"""The whole model: an LSTM over the 28 rows of an image, then a linear readout to 10 classes."""
from __future__ import annotations

import torch
from torch import nn

from .config import Config


class LSTMClassifier(nn.Module):
    def __init__(self, hidden: int, layers: int, bidirectional: bool, dropout: float, readout: str,
                 input_size: int = 28, n_classes: int = 10):
        super().__init__()
        self.readout = readout
        self.directions = 2 if bidirectional else 1
        # nn.LSTM applies its dropout between stacked layers only, so it needs 2+ layers to do anything.
        self.lstm = nn.LSTM(input_size, hidden, layers, batch_first=True, bidirectional=bidirectional,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * self.directions, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (h_n, _) = self.lstm(x)  # x: (B, 28 steps, 28 px); out: (B, 28, D*H); h_n: (layers*D, B, H)
        if self.readout == "last":
            # The seed's readout. For a bidirectional LSTM the backward half of out[:, -1] has seen one row.
            feat = out[:, -1]  # (B, D*H)
        else:
            # Final states of the top layer, both directions: (D, B, H) -> (B, D*H)
            feat = h_n[-self.directions:].transpose(0, 1).reshape(x.shape[0], -1)
        return self.head(self.drop(feat))  # (B, 10) logits


def build(cfg: Config) -> LSTMClassifier:
    return LSTMClassifier(cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.effective_dropout, cfg.readout)


def optimizer(cfg: Config, params):
    """The task's optimizer hook: constant-lr SGD, or with adamw on AdamW and ReduceLROnPlateau on val_loss."""
    if not cfg.adamw:
        return torch.optim.SGD(params, lr=cfg.sgd_lr)
    opt = torch.optim.AdamW(params, lr=cfg.adamw_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"}}
