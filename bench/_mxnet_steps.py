"""The MXNet steps bench/throughput.py measures besides the project's own: raw ``Module``
(MXNet's example/image-classification) and GluonCV's hybridized model.  Each returns
``(step, sync)`` for ``_common.time_steps``; synthetic data, batch x 3 x 32 x 32."""


def symbol(entry):
    """The network of a ``throughput.NETS`` entry, as ``symbols.get_symbol`` builds it."""
    from mxcnn import symbols
    _, network, num_layers, options, _ = entry
    return symbols.get_symbol(network, num_classes=10, num_layers=num_layers, **options)


def module_step(sym, batch_size):
    """Raw MXNet Module, as MXNet's example/image-classification trains."""
    import mxnet as mx
    mod = mx.mod.Module(sym, data_names=("data",), label_names=("softmax_label",), context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch_size, 3, 32, 32))],
             label_shapes=[("softmax_label", (batch_size,))], for_training=True)
    mx.random.seed(0)
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.05, "momentum": 0.9,
                                                          "wd": 1e-4, "rescale_grad": 1.0 / batch_size})
    batch = mx.io.DataBatch(data=[mx.nd.random.uniform(-1, 1, (batch_size, 3, 32, 32))],
                            label=[mx.nd.array([i % 10 for i in range(batch_size)])])

    def step():
        mod.forward_backward(batch)
        mod.update()
    return step, lambda _: mx.nd.waitall()


def gluoncv_step(model, batch_size):
    """GluonCV's CIFAR model ``(name, kwargs)``, hybridized, trained with autograd +
    gluon.Trainer."""
    import mxnet as mx
    from gluoncv import model_zoo
    from mxnet import autograd, gluon
    name, kwargs = model
    if name.startswith("get_"):
        model = getattr(model_zoo, name)(classes=10, **kwargs)
    else:
        model = model_zoo.get_model(name, classes=10, **kwargs)
    mx.random.seed(0)
    model.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    model.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(model.collect_params(), "sgd",
                            {"learning_rate": 0.05, "momentum": 0.9, "wd": 1e-4})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    data = mx.nd.random.uniform(-1, 1, (batch_size, 3, 32, 32))
    label = mx.nd.array([i % 10 for i in range(batch_size)])

    def step():
        with autograd.record():
            loss = loss_fn(model(data), label)
        loss.backward()
        trainer.step(batch_size)
    return step, lambda _: mx.nd.waitall()
