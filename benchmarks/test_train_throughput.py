"""Training throughput (images/s) of one full optimisation step on this machine's CPU.

A step is what `dad-edge train` does per batch: both U-Net passes batched, the
segmentation net, the paper's loss, backward and Adam. Synthetic anomalies are made
beforehand, so this is the model's cost, not the data pipeline's.

    python -m pytest benchmarks/test_train_throughput.py            # compact at 128 and 256
    python -m pytest benchmarks/test_train_throughput.py --full     # also the paper preset
"""
import pytest
import torch

from dad_edge.model.config import preset
from dad_edge.model.losses import diffusion_ad_loss
from dad_edge.model.diffusion_ad import DiffusionAD

CASES = [
    pytest.param("compact", 128, 16, False, id="compact-128-b16"),
    # The CPU recipe's layout (training/recipe.py): NHWC activations for oneDNN's convolutions.
    pytest.param("compact", 128, 16, True, id="compact-128-b16-channels_last"),
    pytest.param("compact", 256, 8, False, id="compact-256-b8"),
    pytest.param("compact", 256, 8, True, id="compact-256-b8-channels_last"),
    pytest.param("paper", 256, 2, False, id="paper-256-b2", marks=pytest.mark.full),
]


@pytest.mark.parametrize("name,size,batch,channels_last", CASES)
def test_train_step_throughput(benchmark, machine, name, size, batch, channels_last):
    torch.manual_seed(0)
    cfg = preset(name, image_size=size, channels=3)
    model = DiffusionAD(cfg).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = (torch.rand(batch, 3, size, size) * 2 - 1).contiguous(memory_format=fmt)
    mask = (torch.rand(batch, 1, size, size) > 0.9).float()
    normal = torch.arange(batch) % 2 == 0
    t_s, t_l = torch.randint(0, 300, (batch,)), torch.randint(300, 1000, (batch,))
    n_s, n_l = torch.randn_like(x), torch.randn_like(x)

    def step():
        rec = model.reconstruct(x, t_s, t_l, n_s, n_l)
        loss = diffusion_ad_loss(rec.eps_small, rec.eps_large, n_s, n_l, rec.seg_logits, mask, normal).total
        opt.zero_grad()
        loss.backward()
        opt.step()

    # The paper preset costs minutes per step on a CPU: one round, no warm-up.
    rounds, warmup = (1, 0) if name == "paper" else (3, 1)
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=warmup)
    images_per_s = batch / benchmark.stats.stats.mean
    benchmark.extra_info.update(preset=name, image_size=size, batch=batch, images_per_s=images_per_s,
                                memory_format="channels_last" if channels_last else "contiguous",
                                device=f"cpu ({machine}), {torch.get_num_threads()} threads", precision="fp32")
    print(f"\n{name} {size}x{size} batch {batch} {'channels_last' if channels_last else 'contiguous'}: "
          f"{images_per_s:.2f} train images/s on {machine} (fp32)")
    assert images_per_s > 0
