// Clustering quality harness: probe recall and work per probe count, leaf sizes.
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>
#include "vidx_core.h"
static const char *mapnpy(const std::string &p, size_t *len) {
  int fd = open(p.c_str(), O_RDONLY); *len = lseek(fd, 0, SEEK_END);
  return (const char *) mmap(nullptr, *len, PROT_READ, MAP_SHARED, fd, 0) + 128; }
int main(int argc, char **argv) {
  std::string dir = argv[1]; std::string mode = argv[2]; int k = atoi(argv[3]); int64_t nsample = atoll(argv[4]);
  int iters = argc > 5 ? atoi(argv[5]) : 10;
  size_t len; const float *base = (const float *) mapnpy(dir + "/base.npy", &len);
  int d = 1024; if (getenv("D")) d = atoi(getenv("D"));
  int64_t n = (int64_t)((len - 128) / (4 * d));
  const float *Q = (const float *) mapnpy(dir + "/queries.npy", &len); int nq = (int)((len - 128) / (4 * d));
  const int64_t *gt = (const int64_t *) mapnpy(dir + "/gt_l2_k100_ids.npy", &len);
  std::mt19937_64 rng(42); std::vector<int64_t> idx(n); std::iota(idx.begin(), idx.end(), 0);
  for (int64_t i = 0; i < nsample; i++) std::swap(idx[i], idx[i + rng() % (n - i)]);
  std::sort(idx.begin(), idx.begin() + nsample);
  std::vector<float> S(nsample * d);
  for (int64_t i = 0; i < nsample; i++) memcpy(&S[i * d], base + idx[i] * d, 4 * d);
  std::vector<float> C((size_t) k * d); std::vector<int32_t> gs(k + 1); int ng = 1; char err[256];
  auto t0 = std::chrono::steady_clock::now();
  int rc = mode == "flat" ? vidx_kmeans(S.data(), nsample, d, k, iters, 7, C.data(), nullptr, nullptr, err, 256)
                          : vidx_kmeans_balanced(S.data(), nsample, d, k, iters, 7, C.data(), gs.data(), &ng, nullptr, nullptr, err, 256);
  double tk = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rc) { printf("err %s\n", err); return 1; }
  // leaf sizes on a 200K subset (scaled), assignments of GT top-10
  int64_t m = std::min<int64_t>(n, 200000);
  std::vector<float> P(m * d); for (int64_t i = 0; i < m; i++) memcpy(&P[i * d], base + ((i * 7919) % n) * d, 4 * d);
  std::vector<int32_t> a(m); t0 = std::chrono::steady_clock::now();
  vidx_assign(P.data(), m, d, C.data(), k, a.data());
  double ta = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (mode != "flat") {
    size_t rs = vidx_sidecar_record_size(d), psz = vidx_posting_size(d);
    std::vector<char> R(rs * m); for (int64_t i = 0; i < m; i++) vidx_sidecar_record_fill(&R[rs * i], d, 0, 1, &P[i * d]);
    std::vector<char> rot(vidx_rotation_size(d)); vidx_rotation_init(rot.data(), d, 1);
    // identity-free: rotate centroids too so the space matches
    std::vector<float> Cr(C); for (int j = 0; j < k; j++) vidx_rotation_apply(rot.data(), &Cr[(size_t) j * d], &Cr[(size_t) j * d]);
    std::vector<float> scr(m * d); std::vector<char> post(psz * m); std::vector<int32_t> a2(m); int64_t vis = 0;
    auto t1 = std::chrono::steady_clock::now();
    vidx_build_encode(R.data(), m, rs, d, 0, VIDX_METRIC_L2, rot.data(), Cr.data(), gs.data(), ng, 0, scr.data(), post.data(), a2.data(), &vis, err, 256);
    double te = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    int64_t diff = 0; for (int64_t i = 0; i < m; i++) diff += a2[i] != a[i];
    printf("encode200k %.1fs visited/pt %.2f of %d groups, differs %lld\n", te, (double) vis / m, ng, (long long) diff);
  }
  std::vector<double> sz(k, 0); for (auto x : a) sz[x] += (double) n / m;
  std::vector<double> ss = sz; std::sort(ss.begin(), ss.end());
  std::vector<float> G((size_t) nq * 10 * d); for (int q = 0; q < nq; q++) for (int j = 0; j < 10; j++) memcpy(&G[((size_t) q * 10 + j) * d], base + gt[q * 100 + j] * d, 4 * d);
  std::vector<int32_t> ga(nq * 10); vidx_assign(G.data(), nq * 10, d, C.data(), k, ga.data());
  int ps[] = {1, 2, 3, 5, 10}; double rec[5] = {0}, work[5] = {0}, w99[5];
  std::vector<std::vector<double>> wq(5);
  for (int q = 0; q < nq; q++) {
    std::vector<std::pair<float, int>> dd(k);
    for (int j = 0; j < k; j++) dd[j] = {vidx_l2sq(Q + (size_t) q * d, &C[(size_t) j * d], d), j};
    std::sort(dd.begin(), dd.end());
    for (int t = 0; t < 5; t++) { double w = 0; int hit = 0;
      for (int p = 0; p < ps[t]; p++) { w += sz[dd[p].second]; for (int j = 0; j < 10; j++) hit += ga[q * 10 + j] == dd[p].second; }
      rec[t] += hit / 10.0; work[t] += w; wq[t].push_back(w); }
  }
  for (int t = 0; t < 5; t++) { std::sort(wq[t].begin(), wq[t].end()); w99[t] = wq[t][(size_t)(0.99 * nq)]; }
  printf("%s k=%d ns=%lld groups=%d kmeans %.1fs assign200k %.1fs | leaf min %.0f p1 %.0f p50 %.0f p99 %.0f max %.0f\n", mode.c_str(), k, (long long) nsample, ng, tk, ta,
         ss[0], ss[k / 100], ss[k / 2], ss[k * 99 / 100], ss[k - 1]);
  for (int t = 0; t < 5; t++) printf("  probes %2d: recall %.3f  cand avg %.0f p99 %.0f\n", ps[t], rec[t] / nq, work[t] / nq, w99[t]);
}
