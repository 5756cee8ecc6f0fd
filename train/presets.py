"""The CIFAR training recipes of the papers, as defaults for ``train_cifar.py --preset NAME``.

Each preset maps command-line destinations to values; flags given explicitly on the
command line override them.  Epoch numbers are the papers' (He et al. train for 64k
iterations = 164 epochs of 391 batches and divide the learning rate at 32k/48k = 82/123).
"""

__all__ = ["PRESETS", "describe"]

#: airbench's summed-loss lr is "per 1024 examples" divided by (1 + 1/(1 - momentum)) per
#: summed example; MXNet averages the gradient, so its lr at batch 1024 is lr / this.
_SUMMED_LR_DIVISOR = 1 + 1 / (1 - 0.85)
#: What the fast recipes share: airbench's optimiser, augmentation, lookahead and TTA.
_FAST_COMMON = dict(network="airbench", optimizer="nag", batch_size=1024, mom=0.85,
                    label_smoothing=0.2, lr_scheduler="linear", warmup_mode="linear",
                    bn_bias_lr_mult=64.0, crop_pad=2, crop_pad_mode="reflect", flip="alternate",
                    lookahead_every=5, lookahead_decay=0.95 ** 5, tta="flip,translate",
                    dtype="auto")


def _fast_recipe(lr_per_1024, epochs, **values):
    """An airbench recipe's flag values from its lr "per 1024 examples" and epochs (see
    FAST_SCALING): the decay 0.0153 per 1024 at that lr, and the triangular schedule
    (0.2x -> 1x over 23% of the epochs -> 0.07x)."""
    lr = round(lr_per_1024 / _SUMMED_LR_DIVISOR, 4)
    return dict(_FAST_COMMON, lr=lr, wd=0.0153 / lr_per_1024, num_epochs=epochs,
                warmup_epochs=round(0.23 * epochs, 4), warmup_lr=0.2 * lr, final_lr=0.07 * lr,
                **values)


#: airbench95: lr 10 per 1024 examples, 15 epochs, widths 128/384/384.
_FAST92 = _fast_recipe(10.0, 15, net_option=["widths=(128,384,384)"])

PRESETS = {
    "resnet": {
        "source": "He, Zhang, Ren, Sun 2016, Deep Residual Learning for Image Recognition, Sec. 4.2",
        "values": dict(network="resnet", optimizer="sgd", lr=0.1, batch_size=128, wd=1e-4,
                       mom=0.9, num_epochs=164, lr_scheduler="step", lr_step_epochs="82,123",
                       lr_factor=0.1),
    },
    "resnet110": {
        "source": "He et al. 2016, Sec. 4.2: for ResNet-110, lr 0.01 to warm up until training "
                  "error is below 80% (about 400 iterations), then back to 0.1",
        "values": dict(network="resnet", num_layers=110, optimizer="sgd", lr=0.1, batch_size=128,
                       wd=1e-4, mom=0.9, num_epochs=164, lr_scheduler="step",
                       lr_step_epochs="82,123", lr_factor=0.1, warmup_iters=400,
                       warmup_lr=0.01, warmup_mode="constant"),
    },
    "preact_resnet": {
        "source": "He, Zhang, Ren, Sun 2016, Identity Mappings in Deep Residual Networks "
                  "(the schedule of He et al. 2016: 0.1, x0.1 at 32k/48k iterations; add "
                  "--warmup-iters 400 --warmup-lr 0.01 --warmup-mode constant for the warm-up)",
        "values": dict(network="preact_resnet", optimizer="sgd", lr=0.1, batch_size=128, wd=1e-4,
                       mom=0.9, num_epochs=164, lr_scheduler="step", lr_step_epochs="82,123",
                       lr_factor=0.1),
    },
    "wrn": {
        "source": "Zagoruyko, Komodakis 2016, Wide Residual Networks, Sec. 4 (Nesterov, "
                  "dropout 0.3 in WRN-28-10)",
        "values": dict(network="wrn", optimizer="nag", lr=0.1, batch_size=128, wd=5e-4, mom=0.9,
                       num_epochs=200, lr_scheduler="step", lr_step_epochs="60,120,160",
                       lr_factor=0.2, dropout=0.3),
    },
    "resnext": {
        "source": "Xie, Girshick, Dollar, Tu, He 2017, Aggregated Residual Transformations, "
                  "Sec. 5.3 (CIFAR)",
        "values": dict(network="resnext", optimizer="sgd", lr=0.1, batch_size=128, wd=5e-4,
                       mom=0.9, num_epochs=300, lr_scheduler="step", lr_step_epochs="150,225",
                       lr_factor=0.1),
    },
    "densenet": {
        "source": "Huang, Liu, van der Maaten, Weinberger 2017, Densely Connected Convolutional "
                  "Networks, Sec. 4.2 (batch 64, Nesterov)",
        "values": dict(network="densenet", optimizer="nag", lr=0.1, batch_size=64, wd=1e-4,
                       mom=0.9, num_epochs=300, lr_scheduler="step", lr_step_epochs="150,225",
                       lr_factor=0.1),
    },
    "fast": {
        "source": "airbench94 (Jordan 2024, arXiv:2404.00498) on --network airbench: batch 1024, "
                  "Nesterov, label smoothing 0.2, triangular lr, BN-bias lr x64, lookahead, "
                  "alternating flip, reflect-padded 2-pixel crops, flip+translate TTA, 10 epochs "
                  "(lr = 1.5 x batch/1024: see FAST_SCALING); --dtype auto: bfloat16 where it "
                  "trains faster (AMD Zen 4/5), float32 elsewhere",
        "values": _fast_recipe(11.5, 10),
    },
    "fast92": {
        "source": "airbench95 (Jordan 2024, arXiv:2404.00498, the time-to-95%% variant) on "
                  "--network airbench: the fast recipe with widths 128/384/384, 15 epochs and "
                  "the lr per 1024 examples at 10 instead of 11.5 (lr = %.3f x batch/1024, "
                  "wd = 1.53e-3: see FAST_SCALING); aimed at 92%% on the JPEG CIFAR-10 test "
                  "images, where the fast recipe stops near 90.5%%" % _FAST92["lr"],
        "values": _FAST92,
    },
}

#: How the fast preset's numbers follow from airbench94's (a summed loss, PyTorch SGD):
#: its lr 11.5 and weight decay 0.0153 are "per 1024 examples" with the lr divided by
#: 1024 * (1 + 1/(1 - momentum)) = 7850.7 per summed example.  MXNet averages the gradient
#: over the batch (rescale_grad = 1/batch), so its lr is 11.5 * batch / 7850.7 = 1.5 at batch
#: 1024 (linear scaling: 0.75 at 512, 0.19 at 128: pass --lr with --batch-size), and its wd,
#: applied as lr * wd per step like the paper's decoupled decay, is 0.0153 / 11.5 = 1.33e-3
#: at every batch size.  The triangular schedule: lr rises linearly from 0.2x to 1x over the
#: first 23% of the steps (2.3 of 10 epochs) and falls linearly to 0.07x at the end.
#: Lookahead every 5 steps with decay 0.95^5 x progress^3 is the paper's (train/lookahead.py),
#: in place of a plain weight EMA (which, measured, ended 1.06 points below the
#: PyTorch peer on the full set); --ema-decay still works beside it.  bfloat16 learns it as
#: float32 does: 90.60% / 90.50% (seeds 0 / 1, whole training set) against float32's 90.92% /
#: 90.52%, so ``--dtype auto`` uses it where it is the faster precision.
FAST_SCALING = "lr = 1.5 * batch / 1024, wd = 1.33e-3"


def describe():
    """One line per preset for ``--help``."""
    return "\n".join("  %-14s %s" % (name, preset["source"]) for name, preset in sorted(PRESETS.items()))
