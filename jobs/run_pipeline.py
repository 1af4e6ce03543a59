"""Entry point for `ray job submit`: the same CLI, run on whatever cluster the job lands on.

    ray job submit --working-dir . -- python jobs/run_pipeline.py run configs/mission.yaml --output s3://bucket/run1

Inside a job RAY_ADDRESS is set, so the pipeline joins the cluster instead of starting Ray.
Exits non-zero on failure, which marks the job FAILED.
"""

import sys

from prefgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
