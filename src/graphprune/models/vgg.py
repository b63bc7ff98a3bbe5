"""VGG-16 with batch norm, CIFAR variant (as in network slimming and DepGraph): 13 convs, one linear head.

Max-pools that would shrink the feature map below 1x1 are left out, so the same network runs on 8x8 digits
(3 pools) and on 32x32 CIFAR (the usual 5).
"""

from torch import nn

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class CifarVGG(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, cfg=VGG16_CFG):
        super().__init__()
        layers, channels, size = [], in_channels, input_size
        for v in cfg:
            if v == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            layers += [nn.Conv2d(channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
