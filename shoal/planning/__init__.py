"""The control plane's pure cores, shared by the services that run them and the gateway's dry-run plans.

`shoal.planning.orchestrator` (services → tasks: scaling, global placement, restarts, rolling updates, jobs,
the reaper) and `shoal.planning.scheduler` (PENDING → ASSIGNED: the filter pipeline and the spread) are run by
services/orchestrator and services/scheduler (their I/O shells: leases, mirrors, writes); `shoal.planning.dryrun`
runs the same cores over a copy of the store's state with a proposed service spec, writing nothing
(`POST /v1/services/{ref}/plan`). No I/O and no clock anywhere in this package."""
