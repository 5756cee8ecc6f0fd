"""CIFAR-10/100 and image-folder data sets packed as RecordIO, and the iterators that read them."""
