"""Solutions and pairs through the registry: the only wing with SQL besides `registry/` itself.

records (rows, one `register` for every kind), anchors (`train`), stars (`build_star`), soups, aligned
copies, imports (`starlight register`), barriers (`measure`, the barrier table, pair batches on a runner),
training (`train_where`: seeds on a runner), doctor. Where work runs is the runners wing (starcli/runners), below this one.
Nothing is imported here, so that `list` and `show` load `records` alone, without torch.
"""
