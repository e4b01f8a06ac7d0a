"""What the tests and scripts/ share, one module per concern (imported as `tests.support.X`
from the project root; nothing edits sys.path):

- `net`: the loopback host and free ports
- `redis_servers`: real Redis/Valkey and Sentinel server processes
- `waiting`: polling a condition with a deadline instead of sleeping
- `runners`: in-process runners (`RunnerHarness`) and waits on their jobs' records
- `http`: requests to a runner's HTTP API
- `records`: job records as the store keeps them (`stored_fields`)
- `processes`: running scripts/bench and scripts/chaos as the executables do
"""
