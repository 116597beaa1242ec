"""Writes the TorchScript model the `transfer` example fine-tunes.

Usage: python make_model.py OUT.pt SEED

A 30 -> 16 -> 2 MLP for the breast-cancer table, with its layers named the way a pre-trained
network handed over by a PyTorch team usually is: a feature extractor `body` and a classifier
`head`. The example pre-trains it, re-initialises the head and fine-tunes only the head with
DP-SGD (the body frozen). Run with the project's venv (torch 2.13), which the example finds.
"""
import sys

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(30, 16), nn.Tanh())
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.body(x))


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(seed)
    torch.jit.script(Net()).save(out)


if __name__ == "__main__":
    main()
