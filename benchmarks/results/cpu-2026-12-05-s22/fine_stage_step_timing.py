import torch,dataclasses,time
import torch.nn as nn, torch.nn.functional as F
from dad_edge.model.config import preset
from dad_edge.model.build import build_model
from dad_edge.model import segnet as S
class B(nn.Module):
    def __init__(self, cin, cbody, width):
        super().__init__()
        self.proj=nn.Conv2d(cbody,width,1)
        self.stem = nn.Sequential(*S.conv_bn_relu(cin, width))
        self.merge = nn.Sequential(*S.conv_bn_relu(2*width, width))
        self.head = nn.Conv2d(width, 1, 3, padding=1)
    def forward(self, x, features, logits):
        size = x.shape[-2:]
        features = F.interpolate(self.proj(features), size=size, mode="bilinear", align_corners=False)
        fine = self.head(self.merge(torch.cat([features, self.stem(x)], dim=1)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False) + fine
class C(nn.Module):  # no BN, no cat: stem + projected features summed
    def __init__(self, cin, cbody, width):
        super().__init__()
        self.proj=nn.Conv2d(cbody,width,1)
        self.stem = nn.Conv2d(cin, width,3,padding=1)
        self.head = nn.Conv2d(width, 1, 3, padding=1)
    def forward(self, x, features, logits):
        size = x.shape[-2:]
        h = F.relu(F.interpolate(self.proj(features), size=size, mode="bilinear", align_corners=False) + self.stem(x))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False) + self.head(h)
ms={}
for name,fw,mk in (("plain",0,None),("A8",8,None),("A4",4,None),("B8",8,B),("C8",8,C),("C16",16,C)):
    cfg=preset('compact',image_size=128,seg_stride=2,method='seg',channels=1)
    cfg=cfg.replace(seg=dataclasses.replace(cfg.seg,fine_width=fw))
    m=build_model(cfg)
    if mk: m.segnet.fine=mk(1,16,fw)
    ms[name]=m.train().to(memory_format=torch.channels_last)
x=torch.rand(16,1,128,128).to(memory_format=torch.channels_last)
t={k:[] for k in ms}
for r in range(6):
    for k,m in ms.items():
        t0=time.perf_counter(); y=m.seg_logits(x); y.sum().backward(); t[k].append(time.perf_counter()-t0)
med=lambda v: sorted(v[1:])[2]
for k in t: print(k, 'median ms %.1f'%(1000*med(t[k])), 'ratio %.2f'%(med(t['plain'])/med(t[k])))
