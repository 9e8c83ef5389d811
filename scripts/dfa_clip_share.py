"""How DFA's feedback scale splits the per-example gradient norm between its two layers (784-800-10).

At the initial weights (the library's default initialisation, seed 0) and 2000 MNIST training examples,
prints the median per-example gradient norm of the output layer, of the hidden layer under DFA with
feedback scale s (and under BP, for reference), and the median share of the hidden layer in the squared
norm. Norms are the closed forms DP-SGD clips: ||delta_i|| * sqrt(||input_i||^2 + 1) per layer (bias
included). Usage: python scripts/dfa_clip_share.py  (MNIST looked up as usual: BIOPLAUSIBLE_DATA or cache)
"""
import torch

from bioplausible import MLP, make_rule
from bioplausible.data import load_dataset

torch.set_num_threads(1)
ds = load_dataset("mnist")
x, y = ds.x_train[:2000].double(), ds.y_train[:2000]
net = MLP([784, 800, 10], hidden="tanh", output="softmax", loss="ce", seed=0, dtype=torch.float64)
W1, W2 = net.layers[0].weight.detach(), net.layers[1].weight.detach()
b1, b2 = net.layers[0].bias.detach(), net.layers[1].bias.detach()
h = torch.tanh(x @ W1.T + b1)
e = torch.softmax(h @ W2.T + b2, 1) - torch.nn.functional.one_hot(y, 10).double()
with_bias = lambda v: (v.pow(2).sum(1) + 1).sqrt()
out = e.norm(dim=1) * with_bias(h)
bp = ((e @ W2) * (1 - h**2)).norm(dim=1) * with_bias(x)
print(f"output layer: median {out.median():.2f}; BP hidden layer: median {bp.median():.2f}")
for s in (0.3, 1.0, 2.0, 4.0):
    rule = make_rule("dfa", net, seed=1, feedback_scale=s)
    B = rule.feedback[0].double()
    hid = ((e @ B.T) * (1 - h**2)).norm(dim=1) * with_bias(x)
    share = (hid**2 / (hid**2 + out**2)).median()
    print(f"DFA feedback scale {s}: hidden median {hid.median():.2f}, hidden share of squared norm {share:.4f}")
