/* expr_bench.c - sandboxed formula runs per second on one core (issue 4's
 * micro-benchmark): one compiled formula, a fresh environment per run with
 * the record's fields, the result back as JSON.
 *   expr_bench [RUNS]   (default 1,000,000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rule/sandbox.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long runs = argc > 1 ? atol(argv[1]) : 1000000;
    sandbox *sb = sandbox_new(NULL);
    char err[512];
    const char *formula = "mileage - mileage % 5000 + 5000";
    int id = sandbox_compile(sb, "bench", formula, strlen(formula), true, err, sizeof err);
    json_t *vars = json_pack("{s:i, s:s, s:f}", "mileage", 0, "plate_no", "粤A12345", "price", 12.5);
    json_t *mileage = json_object_get(vars, "mileage");
    long long check = 0;
    double t0 = now();
    for (long i = 0; i < runs; i++) {
        json_integer_set(mileage, i);
        json_t *out;
        if (sandbox_run(sb, id, vars, &out, err, sizeof err) != LOOM_OK) {
            fprintf(stderr, "run %ld: %s\n", i, err);
            return 1;
        }
        check += json_integer_value(out);
        json_decref(out);
    }
    double secs = now() - t0;
    printf("formula \"%s\" with 3 variables: %ld runs in %.3f s = %.0f runs/s on one core (checksum %lld)\n", formula,
           runs, secs, runs / secs, check);
    json_decref(vars);
    sandbox_free(sb);
    return 0;
}
