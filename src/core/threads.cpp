/*
 * threads.cpp: the core's own thread pool, behind vidx::parallel_for.
 *
 * Not OpenMP, because of what it does inside a PostgreSQL backend: libgomp
 * starts its threads lazily with the signal mask of whichever thread asks, so
 * PostgreSQL's handlers (latch, timeouts, cancel) could run on a worker; it
 * calls exit() when it cannot start a thread, killing the backend; and it
 * sizes its teams from the machine. Here:
 *
 *  - workers are started with every signal blocked (the caller's mask is
 *    blocked around thread creation, then restored), so signals only ever
 *    reach the caller's own thread;
 *  - a worker that cannot be started (std::system_error: EAGAIN, or
 *    std::bad_alloc) means one thread fewer, down to the caller alone;
 *    nothing throws;
 *  - the caller gives the thread count; workers persist (a scan's parallel
 *    estimate pays no thread start) and sleep on their own condition
 *    variable after a short spin, so back-to-back loops (k-means) do not pay
 *    a wake-up each;
 *  - the caller works on the loop too, and once every chunk is taken it
 *    closes the loop and waits only for the workers inside it: a worker that
 *    has not woken up by then (a busy machine) is not waited for, and skips
 *    the loop when it wakes.
 *
 * One parallel loop runs at a time; a loop started while another runs (from
 * another thread, or inside a loop body) runs on its caller alone.
 */
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>

#include <pthread.h>
#include <signal.h>

#include "internal.hpp"

namespace
{

constexpr int MAX_THREADS = VIDX_MAX_THREADS;
/* Polls of an atomic before a worker (or the caller) sleeps: 10-200 µs (about 80 on Zen 5). */
constexpr int SPIN = 4000;

inline void
cpu_relax()
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

struct Worker
{
	std::mutex mu;
	std::condition_variable cv;
	/* The loop this worker is asked to join (bumped by the caller). */
	std::atomic<uint64_t> epoch{0};
};

class Pool
{
  public:
	void run(int threads, int64_t n, int64_t chunk, vidx::LoopBody body, void *ctx) noexcept;

  private:
	int start_workers(int want) noexcept;
	void work(int tid) noexcept;
	void join(uint64_t e, int tid) noexcept;
	static void worker_main(Pool *pool, Worker *w, int tid) noexcept;

	std::mutex call_mu; /* held for the whole of a parallel loop */
	Worker *workers[MAX_THREADS - 1] = {};
	int nworkers = 0; /* workers[i] runs as tid i + 1 */
	uint64_t epoch = 0;

	/* The current loop: its fields are written before open is set to its epoch. */
	vidx::LoopBody body = nullptr;
	void *ctx = nullptr;
	int64_t n = 0, chunk = 1;
	std::atomic<int64_t> next{0};
	std::atomic<uint64_t> open{0}; /* epoch of the loop workers may join; 0: none */
	std::atomic<int> inside{0};    /* workers in join() */
	std::mutex done_mu;
	std::condition_variable done_cv;
};

/* Set on a thread while it runs a loop (for good on workers): a loop inside runs inline. */
thread_local bool in_loop = false;

/*
 * The process's pool: built in static storage on first use and never
 * destroyed (its workers outlive main() until the process exits).
 */
Pool &
pool() noexcept
{
	alignas(Pool) static unsigned char storage[sizeof(Pool)];
	static Pool *p = new (storage) Pool;

	return *p;
}

void
Pool::worker_main(Pool *pool, Worker *w, int tid) noexcept
{
#ifdef __linux__
	pthread_setname_np(pthread_self(), "vidx worker");
#endif
	uint64_t seen = 0;

	in_loop = true;
	for (;;)
	{
		uint64_t e = w->epoch.load(std::memory_order_acquire);

		for (int s = 0; e == seen && s < SPIN; s++)
		{
			cpu_relax();
			e = w->epoch.load(std::memory_order_acquire);
		}
		if (e == seen)
		{
			std::unique_lock<std::mutex> lk(w->mu);

			w->cv.wait(lk,
			           [&]
			           {
				           e = w->epoch.load(std::memory_order_acquire);
				           return e != seen;
			           });
		}
		seen = e;
		pool->join(e, tid);
	}
}

/*
 * Works on loop e if it is still open. inside and open are sequentially
 * consistent: either this worker sees the loop closed, or the caller sees it
 * inside and waits for it.
 */
void
Pool::join(uint64_t e, int tid) noexcept
{
	inside.fetch_add(1);
	if (open.load() == e)
		work(tid);
	if (inside.fetch_sub(1) == 1 && open.load() != e)
	{
		std::lock_guard<std::mutex> lk(done_mu);

		done_cv.notify_one();
	}
}

/* Starts workers until there are want (or one fails to start); returns how many there are. */
int
Pool::start_workers(int want) noexcept
{
	if (nworkers >= want)
		return nworkers;

	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* a new thread inherits its creator's mask */
	while (nworkers < want)
	{
		Worker *w = nullptr;

		try
		{
			w = new Worker;
			std::thread(worker_main, this, w, nworkers + 1).detach();
		}
		catch (...) /* std::system_error (EAGAIN), std::bad_alloc: fewer threads */
		{
			delete w;
			break;
		}
		workers[nworkers++] = w;
	}
	pthread_sigmask(SIG_SETMASK, &old, nullptr);
	return nworkers;
}

void
Pool::work(int tid) noexcept
{
	for (;;)
	{
		int64_t b = next.fetch_add(chunk, std::memory_order_relaxed);

		if (b >= n)
			return;
		body(ctx, b, std::min(n, b + chunk), tid);
	}
}

void
Pool::run(int threads, int64_t n_, int64_t chunk_, vidx::LoopBody body_, void *ctx_) noexcept
{
	std::unique_lock<std::mutex> call(call_mu, std::defer_lock);
	int helpers = 0;

	if (!in_loop && call.try_lock())
		helpers = std::min(start_workers(threads - 1), threads - 1);
	if (helpers == 0)
	{
		body_(ctx_, 0, n_, 0);
		return;
	}
	in_loop = true;
	body = body_;
	ctx = ctx_;
	n = n_;
	chunk = chunk_;
	next.store(0, std::memory_order_relaxed);
	open.store(++epoch);
	for (int i = 0; i < helpers; i++)
	{
		Worker *w = workers[i];

		w->epoch.store(epoch, std::memory_order_release);
		{
			/* A worker checks its epoch under mu before it sleeps: no lost wake-up. */
			std::lock_guard<std::mutex> lk(w->mu);
		}
		w->cv.notify_one();
	}
	work(0);

	/* Every chunk is taken: close the loop, wait for the workers still in it. */
	open.store(0);
	for (int s = 0; inside.load() != 0 && s < SPIN; s++)
		cpu_relax();
	if (inside.load() != 0)
	{
		std::unique_lock<std::mutex> lk(done_mu);

		done_cv.wait(lk, [&] { return inside.load() == 0; });
	}
	in_loop = false;
}

} // namespace

int
vidx::parallel_threads(int threads, int64_t n, int64_t chunk) noexcept
{
	int64_t chunks = chunk > 0 && n > 0 ? (n + chunk - 1) / chunk : 1;

	return (int) std::max<int64_t>(1, std::min<int64_t>({threads, chunks, MAX_THREADS}));
}

void
vidx::parallel_run(int threads, int64_t n, int64_t chunk, LoopBody body, void *ctx) noexcept
{
	if (n <= 0)
		return;
	threads = parallel_threads(threads, n, chunk);
	if (threads == 1)
		body(ctx, 0, n, 0);
	else
		pool().run(threads, n, chunk, body, ctx);
}
