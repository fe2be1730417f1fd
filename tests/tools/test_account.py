"""The CPU account that ``make bench-feed`` prints: pure arithmetic on sampled CPU seconds."""

from benchmarks import account
from benchmarks.sampler import IDLE_CPU

READS = "read tasks (decode)"  # the sampler's name; the account prints another


def ticks(per_second: dict[str, float], start: float, seconds: int) -> list:
    """Samples once a second of services that used ``per_second`` CPU seconds a second."""
    return [
        (start + t, {service: rate * t for service, rate in per_second.items()})
        for t in range(seconds + 1)
    ]


def test_the_steady_account_counts_cpu_per_kind_and_what_no_process_used():
    samples = ticks({READS: 1.5, IDLE_CPU: 0.2}, 100.0, 10)
    batches = [[100.0, 64]] + [[100.0 + t, 100] for t in range(1, 11)]
    found = account.steady_account(samples, batches, cores=2)
    assert found["seconds"] == 10 and found["images"] == 1000
    per = account.per_thousand(found)
    assert abs(per[account.kind_of(READS)] - 15.0) < 1e-9
    assert abs(per[account.OTHER_PROGRAMS] - 3.0) < 1e-9  # 2 cores x 10 s - 15 - 2
    assert abs(account.pipeline_cpu(found) - 15.0) < 1e-9


def test_workers_still_starting_after_the_first_batch_open_the_window_later():
    samples = ticks({READS: 1.0}, 0.0, 10)
    for at, totals in samples:
        totals[account.WORKERS_STARTING] = min(at, 2.0)  # starting until 2 s
    batches = [[0.0, 10]] + [[float(t), 100] for t in range(1, 11)]
    found = account.steady_account(samples, batches, cores=2)
    assert found["opened"] == 2.0 and found["images"] == 800


def test_the_split_tells_per_image_cpu_from_cpu_taken_whatever_the_rate():
    def run(rate: float, seconds: float) -> dict:
        images = rate * seconds  # 3 CPU s per 1,000 images, and 0.1 of a core all the time
        return {
            "images": images,
            "seconds": seconds,
            "cpu": {"reads": 0.003 * images + 0.1 * seconds},
        }

    split = account.split_fixed([run(300, 10), run(100, 20)])
    per_image, fixed = split["reads"]
    assert abs(per_image - 3.0) < 1e-6 and abs(fixed - 0.1) < 1e-6
    assert account.split_fixed([run(300, 10)]) == {}  # one rate: no split
    projected = account.projection(split, cpus=16, device_rate=5000)
    assert abs(projected["cpu_bound"] - (16 - 0.1) / 0.003) < 1e-6
    assert projected["images_per_second"] == 5000


def test_tasks_at_once_from_the_timeline():
    tasks = [
        ["task::MapBatches(read_images)", "a", 0.0, 4.0],
        ["task::MapBatches(read_images)", "a", 0.0, 1.0],  # the same task's shorter span
        ["task::MapBatches(read_images)", "b", 2.0, 4.0],
        ["task::Write", "c", 0.0, 4.0],
    ]
    assert account.tasks_at_once(tasks, "read_images", (0.0, 4.0)) == 1.5
