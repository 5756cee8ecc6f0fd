"""graph.kernel_audit: the DNNL_VERBOSE parser, and every family on oneDNN's fast kernels.

The family check trains one step of a small member of each family module as the trainer
binds it (``graph.training.training_graph``) with ``DNNL_VERBOSE=1`` and fails when oneDNN's
reference (``ref``) implementations take more than 5% of the step's oneDNN time on the CPU
that runs it.  Which kernels oneDNN picks depends on the ISA (the global-pooling ``ref`` path
showed on AVX-512, not on AVX2), so the check runs everywhere and names the CPU flags it saw.
It depends on no timing beyond that share.
"""
import re

import mxnet as mx
import pytest

from mxcnn import symbols
from mxcnn.graph import fusion, kernel_audit, training

MAX_REF_SHARE = 0.05

SAMPLE = """\
dnnl_verbose,info,oneDNN v2.4.4 (commit 5818c40f07bdb6307f9bc64e929836fe036da644)
dnnl_verbose,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support
dnnl_verbose,exec,cpu,convolution,jit:avx512_common,forward_training,src_f32::blocked:aBcd16b:f0 wei_f32::blocked:ABcd16b16a:f0 bia_undef::undef::f0 dst_f32::blocked:aBcd16b:f0,,alg:convolution_direct,mb32_ic16oc16_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,6.0
dnnl_verbose,exec,cpu,pooling_v2,ref:any,backward_data,src_f32::blocked:acdB16b:f0 dst_f32::blocked:aBcd16b:f0 ws_undef::undef::f0,,alg:pooling_avg_include_padding,mb32ic64_ih8oh1kh8sh1dh0ph0_iw8ow1kw8sw1dw0pw0,1.5
dnnl_verbose,exec,cpu,batch_normalization,bnorm_ref:any,backward,data_f32::blocked:aBcd16b:f0 diff_f32::blocked:acdB16b:f0,,flags:S,mb32ic64ih8iw8,2.5
[04:02:37] ../src/executor/graph_executor.cc:1991: Subgraph backend MKLDNN is activated.
dnnl_verbose,exec,cpu,reorder,jit:uni,undef,src_f32::blocked:abcd:f0 dst_f32::blocked:aBcd16b:f0,,,32x16x32x32,1.0
dnnl_verbose,exec,cpu,batch_normalization,bnorm_jit:avx512_common,backward,data_f32::blocked:aBcd16b:f0 diff_f32::blocked:aBcd16b:f0,,flags:S,mb32ic64ih8iw8,0.5
dnnl_verbose,exec,cpu,eltwise,jit:avx512_common,forward_training,data_f32::blocked:aBcd16b:f0 diff_undef::undef::f0,,alg:eltwise_relu alpha:0 beta:0,32x16x32x32,0.5
dnnl_verbose,exec,cpu,convolution,jit:avx512_common,forward_training,src_f32::blocked:aBcd16b:f0 wei_f32::blocked:ABcd16b16a:f0 bia_undef::undef::f0 dst_f32::blocked:aBcd16b:f0,,alg:convolution_direct,mb32_ic16oc16_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,8.0
dnnl_verbose,exec,cpu,reorder,simple:any,undef,src_f32::blocked:ab:f0 dst_f32::blocked:ab:f0,,,64x10,not-a-number
dnnl_verbose,exec,cpu,sum,simple:any
"""


def test_parser_reads_exec_lines_only():
    records = kernel_audit.parse(SAMPLE.splitlines())
    assert len(records) == 7  # info lines, MXNet's log, a truncated and an unparsable line skipped
    conv = records[0]
    assert (conv.primitive, conv.impl, conv.prop) == ("convolution", "jit:avx512_common",
                                                      "forward_training")
    assert conv.layouts.startswith("src_f32::blocked:aBcd16b:f0 wei_f32")
    assert conv.problem == "mb32_ic16oc16_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1"
    assert conv.ms == 6.0
    assert records[4].aux == "flags:S"
    assert kernel_audit.onednn_isa(SAMPLE.splitlines()).startswith("Intel AVX-512")


def test_parser_takes_the_timestamp_field():
    line = ("dnnl_verbose,1700000000123.5,exec,cpu,reorder,jit:uni,undef,"
            "src_f32::blocked:abcd:f0 dst_f32::blocked:aBcd16b:f0,,,2x16x8x8,0.25")
    record = kernel_audit.parse_line(line)
    assert record.primitive == "reorder" and record.ms == 0.25 and record.problem == "2x16x8x8"


def test_ref_and_reorder_classification():
    records = kernel_audit.parse(SAMPLE.splitlines())
    assert [kernel_audit.is_ref(r) for r in records] == [False, True, True, False, False, False, False]
    assert [kernel_audit.is_reorder(r) for r in records].count(True) == 1
    fake = records[0]._replace(impl="jit:avx512_core_bf16")  # "ref" must be a whole token
    assert not kernel_audit.is_ref(fake._replace(impl="jit:prefer"))
    assert kernel_audit.is_ref(fake._replace(impl="gemm:ref"))


def test_summary_shares_and_worst_primitives():
    records = kernel_audit.parse(SAMPLE.splitlines())
    summary = kernel_audit.summarise(records, steps=2, worst=2)
    assert summary["total_ms"] == pytest.approx(20.0 / 2)
    assert summary["ref_share"] == pytest.approx(4.0 / 20.0)
    assert summary["reorder_share"] == pytest.approx(1.0 / 20.0)
    assert summary["executions"] == pytest.approx(3.5)
    top = summary["worst"][0]
    assert (top["primitive"], top["ms"], top["calls"]) == ("convolution", 7.0, 1.0)  # 2 calls / 2 steps
    assert [g["impl"] for g in summary["ref"]] == ["bnorm_ref:any", "ref:any"]
    text = kernel_audit.format_summary("resnet", summary, worst=1)
    assert text[0].startswith("resnet: 10.0 ms in oneDNN per step, ref 20.0%, reorders 5.0%")
    assert len(text) == 1 + 1 + 2 and "acdB16b" in text[2]
    times, flops = kernel_audit.by_kind(records)
    assert times["convolution forward_training"] == 14.0 and times["reorder"] == 1.0
    assert flops["convolution forward_training"] == 2 * 2.0 * 32 * 16 * 16 * 32 * 32 * 9


def test_steps_are_split_by_the_markers():
    exec_line = SAMPLE.splitlines()[2]
    marker = lambda job, step: kernel_audit.MARKER + '{"job": %d, "step": %d}' % (job, step)  # noqa: E731
    lines = ([exec_line] * 5 + [marker(0, 0)] + [exec_line] * 2 + [marker(0, 1)]
             + [exec_line] * 3 + [marker(1, 0)] + [exec_line] * 3 + [marker(1, 1)])
    per_job = kernel_audit._split_steps(lines, 2, steps=1, warmup=1)
    assert [[len(step) for step in steps] for steps in per_job] == [[2], [3]]
    assert kernel_audit._split_steps(lines[:-1], 2, steps=1, warmup=1)[1] is None  # crashed


def test_several_steps_take_each_primitives_least_disturbed_time():
    records = kernel_audit.parse(SAMPLE.splitlines())
    slow = [r._replace(ms=r.ms * 10) if r.primitive == "convolution" else r for r in records]
    summary = kernel_audit.summarise([slow, records])  # a burst of load in the first step
    assert summary["total_ms"] == pytest.approx(20.0)
    assert summary["ref_share"] == pytest.approx(4.0 / 20.0)
    assert summary["executions"] == 7


# ----------------------------------------------------------------------------------------------
# every family, as the trainer binds it

CIFAR = (3, 32, 32)
#: One small member of each family module (plus SE-ResNet, whose squeeze pools were the
#: worst case): (label, network, options, image shape, batch).  Inception v3/v4 have no
#: CIFAR layout: their smallest input, 75x75.
FAMILIES = [
    ("resnet", "resnet", dict(num_layers=20), CIFAR, 4),
    ("se_resnet", "se_resnet", dict(num_layers=20), CIFAR, 4),
    ("preact_resnet", "preact_resnet", dict(num_layers=20), CIFAR, 4),
    ("wrn", "wrn", dict(num_layers=10, widen_factor=2), CIFAR, 4),
    ("resnext", "resnext", dict(num_layers=29, cardinality=2, bottleneck_width=16), CIFAR, 4),
    # groups of 4 and 8 channels, as in ResNeXt-50 32x4d: odd blocked layouts around them
    ("resnext_8x4d", "resnext", dict(num_layers=29, cardinality=8, bottleneck_width=4), CIFAR, 4),
    ("lenet", "lenet", {}, CIFAR, 4),
    ("alexnet", "alexnet", {}, CIFAR, 4),
    ("vgg", "vgg", dict(num_layers=11, batch_norm=True), CIFAR, 4),
    ("googlenet", "googlenet", {}, CIFAR, 4),
    ("inception_bn", "inception_bn", {}, CIFAR, 4),
    ("inception_v3", "inception_v3", {}, (3, 75, 75), 2),
    ("inception_v4", "inception_v4", {}, (3, 75, 75), 2),
    ("densenet", "densenet", dict(num_layers=40, bottleneck=True), CIFAR, 4),
    ("mobilenet", "mobilenet", dict(multiplier=0.5), CIFAR, 4),
    ("airbench", "airbench", dict(widths=(16, 32, 32)), CIFAR, 4),
]


def test_every_family_module_is_audited():
    covered = {symbols.family_module(family[1]).__name__ for family in FAMILIES}
    modules = {symbols.family_module(name).__name__ for name in symbols.list_networks()}
    missing = sorted(modules - covered)
    assert not missing, "add a member of %s to FAMILIES" % ", ".join(missing)


@pytest.fixture(scope="module")
def family_audit():
    """``{label: summary}`` of one audited training step per family, all in one child."""
    jobs = []
    for label, network, options, shape, batch in FAMILIES:
        sym = symbols.get_symbol(network, num_classes=10, image_shape=shape, **options)
        data_shape = (batch,) + shape
        jobs.append((label, training.training_graph(sym, [mx.cpu()], data_shape), data_shape))
    # one OpenMP thread: the kernels and layouts oneDNN picks do not depend on it, and on a
    # busy shared machine a descheduled thread would stall its sibling inside any primitive;
    # two audited steps, each primitive's least disturbed one counted (summarise)
    summaries = kernel_audit.measure(jobs, steps=2, warmup=1, env={"OMP_NUM_THREADS": "1"},
                                     timeout=900)
    return dict(zip([job[0] for job in jobs], summaries))


@pytest.mark.skipif(not fusion.available(), reason="needs MXNet with oneDNN")
@pytest.mark.parametrize("label", [family[0] for family in FAMILIES])
def test_family_runs_on_fast_kernels(family_audit, label):
    summary = family_audit[label]
    assert summary["executions"] > 0 and summary["total_ms"] > 0, \
        "DNNL_VERBOSE printed no executions: the audit would be vacuous"
    flags = " ".join(kernel_audit.isa_flags()) or "unknown"
    refs = "; ".join("%s %s %s (%.1f ms, %s)" % (g["primitive"], g["prop"], g["impl"], g["ms"],
                                                 g["layouts"]) for g in summary["ref"][:3])
    assert summary["ref_share"] <= MAX_REF_SHARE, (
        "%s: oneDNN reference kernels take %.1f%% (> %.0f%%) of a training step's oneDNN time "
        "on %s (CPU flags: %s; oneDNN isa: %s): %s"
        % (label, 100 * summary["ref_share"], 100 * MAX_REF_SHARE, kernel_audit.cpu_name(),
           flags, summary["isa"], refs))


def _grouped(problem):
    """A grouped convolution's problem text names its group count, e.g. ``mb4_g8ic32oc32_...``."""
    return re.search(r"(^|_)g\d+", problem) is not None


@pytest.mark.skipif(not fusion.available() or "avx512f" not in kernel_audit.isa_flags(),
                    reason="needs MXNet with oneDNN on an AVX-512 CPU")
@pytest.mark.parametrize("label", [family[0] for family in FAMILIES])
def test_family_runs_no_avx2_kernels_on_avx512(family_audit, label):
    """oneDNN keeps 8-aligned channel counts in AVX2's 8-blocked layout and kernels even on
    AVX-512 (airbench's whitening, GoogLeNet's and MobileNetV2's 24 channels), unless
    graph.channel_pad pads them to 16.  Grouped convolutions of 8 channels per group
    (ResNeXt 8x4d) are the exception: padding cannot widen a group."""
    slow = ["%s %s %s (%.1f ms, %s)" % (g["primitive"], g["prop"], g["impl"], g["ms"], g["problem"])
            for g in family_audit[label]["groups"]
            if "avx2" in g["impl"] and not _grouped(g["problem"])]
    assert not slow, "%s runs AVX2 kernels on this AVX-512 CPU: %s" % (label, "; ".join(slow))
