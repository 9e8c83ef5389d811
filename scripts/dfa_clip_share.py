"""How DFA's feedback scale splits the per-example gradient norm between its two layers (784-800-10).

At the initial weights (the library's default initialisation, seed 0) and 2000 MNIST training examples,
prints the median per-example gradient norm of the output layer, of the hidden layer under DFA with
feedback scale s (and under BP, for reference), and the median share of the hidden layer in the squared
norm. Norms come from the rules' own teaching signals and the closed form DP-SGD clips with
(privacy.clipping.layer_sq_norms: ||delta_i||^2 * (||input_i||^2 + 1) per layer, bias included). Usage: python scripts/dfa_clip_share.py  (MNIST looked up as usual: BIOPLAUSIBLE_DATA or cache)
"""
import torch

from bioplausible import MLP, make_rule
from bioplausible.data import load_dataset
from bioplausible.privacy.clipping import layer_sq_norms

torch.set_num_threads(1)
ds = load_dataset("mnist")
x, y = ds.x_train[:2000].double(), ds.y_train[:2000]
t = torch.nn.functional.one_hot(y, 10).double()
net = MLP([784, 800, 10], hidden="tanh", output="softmax", loss="ce", seed=0, dtype=torch.float64)


def layer_norms(rule_name, **opts):
    """(hidden, output) per-example squared gradient norms of the rule's two layers."""
    hidden, output = make_rule(rule_name, net, seed=1, **opts).teach(x, t).terms
    return layer_sq_norms(hidden.delta, hidden.inp), layer_sq_norms(output.delta, output.inp)


bp_hid, out = layer_norms("bp")
print(f"output layer: median {out.sqrt().median():.2f}; BP hidden layer: median {bp_hid.sqrt().median():.2f}")
for s in (0.3, 1.0, 2.0, 4.0):
    hid, _ = layer_norms("dfa", feedback_scale=s)
    share = (hid / (hid + out)).median()
    print(f"DFA feedback scale {s}: hidden median {hid.sqrt().median():.2f}, hidden share of squared norm {share:.4f}")
