/* tinyc_profile.h - per-layer profiling hook used by generated model code.
 *
 * Generated code calls TINYC_LAYER_MARK(i) before layer i and
 * TINYC_LAYER_MARK(n_layers) after the last layer.  Unless the build defines
 * TINYC_PROFILE the macro costs nothing; with TINYC_PROFILE it calls
 * tinyc_profile_mark(), which the harness (runtime_c/targets/bench_main.c,
 * run_main.c) or the application provides.
 */
#ifndef TINYC_PROFILE_H
#define TINYC_PROFILE_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef TINYC_PROFILE
void tinyc_profile_mark(int layer);
#define TINYC_LAYER_MARK(i) tinyc_profile_mark(i)
#else
#define TINYC_LAYER_MARK(i) ((void)0)
#endif

#ifdef __cplusplus
}
#endif

#endif /* TINYC_PROFILE_H */
