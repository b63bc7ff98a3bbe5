"""MobileNetV2 (Sandler et al. 2018), CIFAR variant: stem stride 1 and the second stage at stride 1, so a
32x32 input ends at 4x4 as in the common CIFAR ports; 8x8 digits end at 1x1."""

from torch import nn

# (expansion t, output channels c, repeats n, first stride s), CIFAR strides
CIFAR_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers = [] if expansion == 1 else [conv_bn_relu(cin, hidden, 1)]
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class CifarMobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__()
        cin = int(32 * width_mult)
        blocks = [conv_bn_relu(in_channels, cin, 3, 1)]
        for t, c, n, s in CIFAR_SETTINGS:
            cout = int(c * width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        self.last_channels = int(1280 * max(1.0, width_mult))
        blocks.append(conv_bn_relu(cin, self.last_channels, 1))
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.last_channels, num_classes)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
