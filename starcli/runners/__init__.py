"""Where work runs: this process, a local pool of workers, SLURM (submitit) or Ray.

The runners know work only through the `Job` protocol (jobs.py): a picklable unit that opens the
registry named in it, does its work there and describes its own result. They never ask what kind of
work a job is, so a new kind of work (a seed, a star, a batch of barrier pairs, ...) needs no change
here. Below `solutions/`: the kinds of work import runners, never the reverse.

options (`RunOptions`, the executor options checked before any work, torch-free), jobs (the protocol,
running one job, results and failures), local (the spawn pool, and `Submissions`: jobs read back as
they complete), slurm (submitit arrays), ray_tasks (Ray tasks), run (`run_jobs`: a list of jobs where
the options say).
Nothing is imported here, so that a command can check its options without torch.
"""
