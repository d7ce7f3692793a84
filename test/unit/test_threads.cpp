/*
 * The core's threads (core/threads.cpp): signals blocked in every worker,
 * results independent of the thread count, fewer threads (never a dead
 * process) when threads cannot be started.
 */
#include <gtest/gtest.h>

#include <dirent.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "internal.hpp"
#include "test_util.hpp"

namespace
{

/* A field of /proc/self/task/<tid>/status ("" if the thread is gone). */
std::string
task_status(const std::string &tid, const char *field)
{
	std::ifstream in("/proc/self/task/" + tid + "/status");
	std::string line, key = std::string(field) + ":";

	while (std::getline(in, line))
		if (line.compare(0, key.size(), key) == 0)
		{
			size_t v = line.find_first_not_of(" \t", key.size());

			return v == std::string::npos ? "" : line.substr(v);
		}
	return "";
}

std::vector<std::string>
tasks()
{
	std::vector<std::string> out;
	DIR *d = opendir("/proc/self/task");

	for (dirent *e; d && (e = readdir(d));)
		if (e->d_name[0] != '.')
			out.push_back(e->d_name);
	if (d)
		closedir(d);
	return out;
}

/* The pool's threads (named "vidx worker"). */
int
pool_workers()
{
	int n = 0;

	for (const auto &t : tasks())
		n += task_status(t, "Name") == "vidx worker";
	return n;
}

/* Everything the parallel entry points compute, as bytes. */
struct Outputs
{
	std::vector<float> kmeans, balanced, rotated, scratch, est, lower;
	std::vector<int32_t> assign, enc_assign;
	std::vector<char> postings, tree;

	bool operator==(const Outputs &o) const
	{
		return kmeans == o.kmeans && balanced == o.balanced && rotated == o.rotated &&
		       scratch == o.scratch && est == o.est && lower == o.lower && assign == o.assign &&
		       enc_assign == o.enc_assign && postings == o.postings && tree == o.tree;
	}
};

Outputs
run_all(int threads)
{
	const int d = 24, k = 60;
	const int64_t n = 9000;
	auto pts = vt::clustered(n, d, 40, 17, 1.0f, 3.0f);
	Outputs o;
	char err[256] = "";

	o.kmeans.resize((size_t) k * d);
	EXPECT_EQ(VIDX_OK, vidx_kmeans(pts.data(), n, d, k, 8, 3, o.kmeans.data(), threads, nullptr,
	                               nullptr, err, sizeof(err)))
	    << err;
	o.balanced.resize((size_t) k * d);
	EXPECT_EQ(VIDX_OK, vidx_kmeans_balanced(pts.data(), n, d, k, 8, 3, o.balanced.data(), threads,
	                                        nullptr, nullptr, err, sizeof(err)))
	    << err;
	o.assign.resize(n);
	vidx_assign(pts.data(), n, d, o.balanced.data(), k, o.assign.data(), threads);

	/* The build's batch path: sidecar records, rotation, assignment, encoding. */
	size_t rs = vidx_sidecar_record_size(d), ps = vidx_posting_size_refined(d, 4);
	std::vector<char> recs(rs * n), rot(vidx_rotation_size(d));

	for (int64_t i = 0; i < n; i++)
		vidx_sidecar_record_fill(recs.data() + rs * i, d, pts.data() + (size_t) i * d);
	std::vector<VidxHeapTid> tids(n);
	for (int64_t i = 0; i < n; i++)
		tids[i] = {(uint32_t) i, 1, 0};
	vidx_rotation_init(rot.data(), d, 5);
	o.rotated.resize((size_t) n * d);
	vidx_build_rotate(recs.data(), n, rs, d, VIDX_METRIC_COSINE, rot.data(), o.rotated.data(),
	                  threads);
	o.scratch.resize((size_t) n * d);
	o.postings.resize(ps * n);
	o.enc_assign.resize(n);
	EXPECT_EQ(VIDX_OK,
	          vidx_build_encode(recs.data(), tids.data(), n, rs, d, 4, VIDX_METRIC_L2, rot.data(),
	                            o.balanced.data(), k, 7, o.scratch.data(), o.postings.data(),
	                            o.enc_assign.data(), threads, err, sizeof(err)))
	    << err;

	size_t size = 0;
	void *tree =
	    vidx_tree_build(o.balanced.data(), nullptr, k, d, 4, 9, &size, threads, err, sizeof(err));

	EXPECT_NE(nullptr, tree) << err;
	if (tree)
		o.tree.assign(static_cast<char *>(tree), static_cast<char *>(tree) + size);
	vidx_tree_free(tree);

	/* The scan's estimate: one task per 300 postings. */
	std::vector<char> prep(vidx_query_prep_size(d));
	std::vector<const VidxPosting *> ptrs(n);
	std::vector<VidxEstimateTask> tasks;

	vidx_query_prep_refined(prep.data(), VIDX_METRIC_L2, o.rotated.data(), o.balanced.data(), d, 0);
	for (int64_t i = 0; i < n; i++)
		ptrs[i] = reinterpret_cast<const VidxPosting *>(o.postings.data() + ps * i);
	std::vector<VidxCandidate> cands(n);

	for (int64_t i = 0; i < n; i += 300)
		tasks.push_back(
		    {prep.data(), ptrs.data() + i, (int) std::min<int64_t>(300, n - i), cands.data() + i});
	vidx_rabitq_estimate_tasks(tasks.data(), (int) tasks.size(), threads);

	/* Each candidate: the estimate of its posting, and the header re-scoring needs. */
	std::vector<float> est(n), lower(n);

	vidx_rabitq_estimate(prep.data(), ptrs.data(), (int) n, est.data(), lower.data());
	for (int64_t i = 0; i < n; i++)
	{
		const VidxCandidate &c = cands[i];
		const VidxPosting *p = ptrs[i];

		o.est.push_back(c.est);
		o.lower.push_back(c.lower);
		EXPECT_EQ(est[i], c.est) << i;
		EXPECT_EQ(lower[i], c.lower) << i;
		EXPECT_TRUE(c.heap_block == p->heap_block && c.heap_offset == p->heap_offset &&
		            c.slot == p->slot && c.vhash == p->vhash && c.rescored == 0)
		    << i;
	}
	return o;
}

TEST(Threads, SameResultsForAnyThreadCount)
{
	Outputs one = run_all(1);

	for (int threads : {2, 3, 8})
		EXPECT_TRUE(one == run_all(threads)) << threads << " threads";
	/* 8 threads were asked for, and the work had the chunks to use them. */
	EXPECT_GE(pool_workers(), 7);
}

/*
 * The pool itself: every item once, every tid below parallel_threads, with
 * loops from several threads at once (one runs on the pool, the others on
 * their callers) and loops inside loop bodies; many short loops, so that
 * workers join late, skip closed loops and sleep between them.
 */
TEST(Threads, EveryItemOnceFromConcurrentAndNestedLoops)
{
	std::vector<std::thread> callers;
	std::atomic<int> failures{0};

	for (int c = 0; c < 3; c++)
		callers.emplace_back(
		    [&, c]
		    {
			    for (int round = 0; round < 2000; round++)
			    {
				    const int threads = 1 + (round + c) % 5;
				    const int64_t n = 1 + (round * 37 + c * 11) % 400, chunk = 1 + round % 7;
				    const int nt = vidx::parallel_threads(threads, n, chunk);
				    std::vector<std::atomic<int>> hits((size_t) n);
				    std::atomic<int64_t> inner{0};

				    vidx::parallel_for(threads, n, chunk,
				                       [&](int64_t i, int tid) noexcept
				                       {
					                       if (tid < 0 || tid >= nt)
						                       failures++;
					                       hits[i]++;
					                       if (i % 50 == 0)
						                       vidx::parallel_for(4, 20, 1,
						                                          [&](int64_t, int t) noexcept
						                                          {
							                                          if (t < 0 || t >= 4)
								                                          failures++;
							                                          inner++;
						                                          });
				                       });
				    for (auto &h : hits)
					    failures += h.load() != 1;
				    failures += inner.load() != 20 * ((n + 49) / 50);
			    }
		    });
	for (auto &t : callers)
		t.join();
	EXPECT_EQ(0, failures.load());
}

/* SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM, SIGCHLD: PostgreSQL's handlers. */
const int PG_SIGNALS[] = {SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM, SIGCHLD};

TEST(Threads, WorkersBlockEverySignal)
{
	std::string full;
	std::vector<std::pair<std::string, std::string>> others; /* tid, SigBlk */
	bool restored = false;

	/* The caller has an empty mask, as a PostgreSQL backend's main thread does. */
	std::thread t(
	    [&]
	    {
		    sigset_t none, all, now;
		    const std::string self = std::to_string((long) syscall(SYS_gettid));
		    const std::string main_tid = std::to_string((long) getpid());

		    sigemptyset(&none);
		    sigfillset(&all);
		    pthread_sigmask(SIG_SETMASK, &none, nullptr);
		    run_all(4);
		    pthread_sigmask(SIG_SETMASK, nullptr, &now);
		    restored = sigisemptyset(&now);
		    for (const auto &tid : tasks())
			    if (tid != main_tid && tid != self)
				    others.emplace_back(tid, task_status(tid, "SigBlk"));
		    /* The mask of a thread that blocked all it can (the kernel and libc keep a few). */
		    pthread_sigmask(SIG_SETMASK, &all, nullptr);
		    full = task_status(self, "SigBlk");
	    });
	t.join();

	EXPECT_TRUE(restored) << "the caller's signal mask was not restored";
	ASSERT_EQ(16u, full.size());
	uint64_t mask = std::stoull(full, nullptr, 16);

	for (int sig : PG_SIGNALS)
		EXPECT_TRUE(mask >> (sig - 1) & 1) << "signal " << sig;
	EXPECT_GE(others.size(), 3u); /* run_all(4): three workers at least */
	for (const auto &o : others)
		EXPECT_EQ(full, o.second) << "thread " << o.first;
}

/*
 * Makes every thread creation of the calling thread (and of threads it
 * creates) fail with EAGAIN, as when a process or user is at its thread
 * limit: a seccomp filter on clone and clone3.
 */
bool
deny_thread_creation()
{
	struct sock_filter code[] = {
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 2, 0),
#ifdef __NR_clone3
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 1, 0),
#else
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 1, 0),
#endif
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EAGAIN & SECCOMP_RET_DATA)),
	};
	struct sock_fprog prog = {(unsigned short) (sizeof(code) / sizeof(code[0])), code};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		return false;
	/* Check that it works: pthread_create must now fail. */
	pthread_t th;
	int rc = pthread_create(
	    &th, nullptr, [](void *) -> void * { return nullptr; }, nullptr);

	if (rc == 0)
		pthread_join(th, nullptr);
	return rc == EAGAIN;
}

std::vector<float>
kmeans(int threads)
{
	const int d = 16, k = 50;
	const int64_t n = 12000;
	static const auto pts = vt::clustered(n, d, 30, 23, 1.0f, 3.0f);
	std::vector<float> cent((size_t) k * d);

	if (vidx_kmeans(pts.data(), n, d, k, 6, 11, cent.data(), threads, nullptr, nullptr, nullptr,
	                0) != VIDX_OK)
		cent.clear();
	return cent;
}

TEST(Threads, FailedThreadStartMeansFewerThreads)
{
	const auto want = kmeans(1);

	ASSERT_FALSE(want.empty());
	/* Some workers exist, then no more can start: the loop runs on those it has. */
	ASSERT_EQ(want, kmeans(2));
	const int before = pool_workers();
	bool denied = false;
	std::vector<float> got;

	std::thread t(
	    [&]
	    {
		    denied = deny_thread_creation();
		    if (denied)
			    got = kmeans(before + 8);
	    });
	t.join();
	ASSERT_TRUE(denied) << "could not install the seccomp filter that denies clone";
	EXPECT_EQ(want, got);
	EXPECT_EQ(before, pool_workers());
	EXPECT_GE(before, 1); /* so it ran on fewer threads, not on the caller alone */
}

TEST(ThreadsDeathTest, NoThreadCanStartMeansTheCallerAlone)
{
	/* A process of its own (re-executed), whose pool has no worker yet. */
	GTEST_FLAG_SET(death_test_style, "threadsafe");
	EXPECT_EXIT(
	    {
		    const auto want = kmeans(1);

		    if (!deny_thread_creation())
			    _exit(2);
		    /* _exit: no exit handlers (LeakSanitizer would need a thread). */
		    _exit(!want.empty() && kmeans(8) == want && pool_workers() == 0 ? 0 : 1);
	    },
	    ::testing::ExitedWithCode(0), "");
}

} // namespace
