"""Does an exponential moving average of the weights help DP-SGD? BP on MNIST at epsilon = 3, the recipe of
docs/privacy.md section 8 (validation split 10 000), validation error of the live weights and of EMAs with
several decays every 5 epochs.  Usage: python scripts/dp_ema_mnist.py [RULE EPOCHS LR BATCH VALIDATION]"""
import copy, math, sys, time, json
import torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src"))
from bioplausible import MLP, make_rule
from bioplausible.data import load_dataset
from bioplausible.privacy import make_private
torch.set_num_threads(1)
rule_name = sys.argv[1] if len(sys.argv) > 1 else "bp"
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 40
lr0 = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
B = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
val = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
ds = load_dataset("mnist", validation=val or None, seed=0)
x, y = ds.x_train, ds.y_train
xv, yv = (ds.x_val, ds.y_val) if val else (ds.x_test, ds.y_test)
n = x.shape[0]
net = MLP([784, 800, 10], hidden="tanh", output="softmax", loss="ce", reduction="mean", seed=0)
rule = make_rule(rule_name, net, seed=1)
priv = make_private(rule, n_train=n, batch_size=B, epochs=epochs, target_epsilon=3.0, clip_norm=1.0, delta=1e-5, seed=0)
opt = torch.optim.SGD(net.parameters(), lr=lr0, momentum=0.9)
decays = [0.9, 0.97, 0.99, 0.995, 0.998]
emas = {d: [p.detach().clone() for p in net.parameters()] for d in decays}
t = net.targets(y)
gen = torch.Generator().manual_seed(0)
def err(params):
    with torch.no_grad():
        h = xv
        ps = list(params)
        for i in range(0, len(ps), 2):
            a = h @ ps[i].t() + ps[i + 1]
            h = torch.tanh(a) if i + 2 < len(ps) else a
        return float((h.argmax(1) != yv).float().mean())
print("sigma", priv.noise_multiplier, flush=True)
for ep in range(epochs):
    for g in opt.param_groups:
        g["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * ep / epochs))
    for idx in priv.batches(gen):
        priv.step_grads(x[idx], t[idx]) if idx.numel() else priv.step_grads(None, None)
        opt.step()
        with torch.no_grad():
            for d, ps in emas.items():
                torch._foreach_lerp_(ps, list(net.parameters()), 1 - d)
    if ep % 5 == 4 or ep == epochs - 1:
        print(json.dumps({"epoch": ep + 1, "live": err(net.parameters()), **{str(d): err(ps) for d, ps in emas.items()},
                          "eps": priv.epsilon()}), flush=True)
