import torch, sys
from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.checkpoint import save_model
from dad_edge.model.config import preset
from dad_edge.model.build import build_model
for name,kw in (("dad256",{}),("seg256",{"method":"seg"})):
    cfg=preset("compact",image_size=256,channels=3,**kw)
    torch.manual_seed(0); net=build_model(cfg).eval()
    with torch.no_grad():
        for p in net.parameters(): p.add_(0.01*torch.randn_like(p))
    save_model(f"{name}.safetensors", net, md.build_metadata(cfg)); print(name, cfg.method, sum(p.numel() for p in net.parameters()))
