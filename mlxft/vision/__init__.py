"""Image backbones in MLX (EfficientNet-Lite, ResNet, ViT), their checkpoint readers and strict weight loading."""
