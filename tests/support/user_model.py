"""A model file of a user's own (``file.py:factory``), with factories that build, ignore
arguments, fail, and return something that is not a model."""

USER_MODEL = '''
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self, num_classes, in_channels, width=4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.flat(self.pool(torch.relu(self.conv(x)))))

def build(num_classes=10, in_channels=3, width=4):
    return Tiny(num_classes, in_channels, width)

def ten_classes_always():
    return Tiny(10, 3)

def broken(**kwargs):
    raise ValueError("no such width\\nsecond line")

def not_a_model(**kwargs):
    return 42
'''
