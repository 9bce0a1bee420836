"""Solutions and pairs through the registry: the only wing with SQL besides `registry/` itself.

records (rows, one `register` for every kind), anchors (`train`), stars (`build_star`), soups, aligned
copies, imports (`starlight register`), barriers (`measure` and the barrier table), executors, doctor.
Nothing is imported here, so that `list` and `show` load `records` alone, without torch.
"""
