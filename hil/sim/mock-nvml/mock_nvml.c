/*
 * mock_nvml.c: a stateful stand-in for libnvidia-ml.so.1, for tests only.
 *
 * Exports the subset of NVML that drivers/gpu/nvml.ts binds, with the real
 * signatures, struct layouts and return codes, so that the real binding loads
 * it through dlopen exactly as it loads the NVIDIA driver's library.
 *
 * Model per GPU (H100-like): limit constraints 200..700 W, default 700 W.
 * Power follows min(load, enforced limit) with a first-order time constant;
 * the energy counter integrates power exactly; the 1 s average follows power
 * with a 1 s time constant. Time is CLOCK_MONOTONIC, evaluated on each call.
 *
 * Environment (read by mock_nvml_reset(), which the constructor calls):
 *   MOCK_NVML_GPUS     number of GPUs (1..16, default 2)
 *   MOCK_NVML_TAU_MS   power time constant in ms (default 200; 0 = instant)
 *   MOCK_NVML_LOAD_MW  load each GPU would draw uncapped (default 650000)
 *
 * Test controls (same dlopen handle, so same state): mock_nvml_set_permission,
 * mock_nvml_lose_gpu, mock_nvml_set_load_mw, mock_nvml_set_time_constant_ms,
 * mock_nvml_reset, mock_nvml_init_count.
 *
 * Build:  gcc -shared -fPIC -O2 -o libnvidia-ml.so.1 mock_nvml.c -lm -lpthread
 * Old-driver variant (no nvmlDeviceGetFieldValues): add -DMOCK_NVML_OLD_DRIVER
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

typedef enum {
  NVML_SUCCESS = 0,
  NVML_ERROR_UNINITIALIZED = 1,
  NVML_ERROR_INVALID_ARGUMENT = 2,
  NVML_ERROR_NOT_SUPPORTED = 3,
  NVML_ERROR_NO_PERMISSION = 4,
  NVML_ERROR_NOT_FOUND = 6,
  NVML_ERROR_INSUFFICIENT_SIZE = 7,
  NVML_ERROR_GPU_IS_LOST = 15,
  NVML_ERROR_UNKNOWN = 999
} nvmlReturn_t;

typedef enum { NVML_TEMPERATURE_GPU = 0 } nvmlTemperatureSensors_t;

typedef enum {
  NVML_VALUE_TYPE_DOUBLE = 0,
  NVML_VALUE_TYPE_UNSIGNED_INT = 1,
  NVML_VALUE_TYPE_UNSIGNED_LONG = 2,
  NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3,
  NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4,
  NVML_VALUE_TYPE_SIGNED_INT = 5
} nvmlValueType_t;

typedef union {
  double dVal;
  int siVal;
  unsigned int uiVal;
  unsigned long ulVal;
  unsigned long long ullVal;
  signed long long sllVal;
} nvmlValue_t;

/* Same layout as nvml.h: 40 bytes on LP64. */
typedef struct {
  unsigned int fieldId;
  unsigned int scopeId;
  long long timestamp;   /* us since epoch */
  long long latencyUsec;
  nvmlValueType_t valueType;
  nvmlReturn_t nvmlReturn;
  nvmlValue_t value;
} nvmlFieldValue_t;

typedef struct {
  unsigned int gpu;
  unsigned int memory;
} nvmlUtilization_t;

#define NVML_FI_DEV_POWER_AVERAGE 185
#define NVML_FI_DEV_POWER_INSTANT 186

#define MAX_GPUS 16
#define MIN_LIMIT_MW 200000u
#define MAX_LIMIT_MW 700000u
#define DEFAULT_LIMIT_MW 700000u
#define IDLE_MW 70000.0

struct mock_gpu {
  unsigned index;
  char uuid[80];
  char serial[32];
  int lost;
  unsigned limit_mw;
  unsigned load_mw;
  unsigned locked_min_mhz, locked_max_mhz;
  double power_mw;
  double avg_mw;
  double energy_mj;
  double last_s;
};
typedef struct mock_gpu *nvmlDevice_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct mock_gpu gpus[MAX_GPUS];
static unsigned gpu_count;
static unsigned init_count;
static int permission = 1;
static double tau_s = 0.2;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned env_uint(const char *name, unsigned dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  char *end;
  unsigned long x = strtoul(v, &end, 10);
  return *end ? dflt : (unsigned)x;
}

static double target_mw(const struct mock_gpu *g) {
  double t = g->load_mw < g->limit_mw ? g->load_mw : g->limit_mw;
  return t < IDLE_MW ? IDLE_MW : t;
}

/* Advances one GPU's power, 1 s average and energy to now (mutex held). */
static void advance(struct mock_gpu *g) {
  double t = now_s();
  double dt = t - g->last_s;
  g->last_s = t;
  if (dt <= 0) return;
  double target = target_mw(g);
  double p0 = g->power_mw;
  if (tau_s <= 0) {
    g->power_mw = target;
    g->energy_mj += target * dt;
  } else {
    double k = 1.0 - exp(-dt / tau_s);
    g->power_mw = p0 + (target - p0) * k;
    /* exact integral of the exponential approach, mW * s = mJ */
    g->energy_mj += target * dt + (p0 - target) * tau_s * k;
  }
  g->avg_mw += (g->power_mw - g->avg_mw) * (1.0 - exp(-dt / 1.0));
}

static void reset_locked(void) {
  gpu_count = env_uint("MOCK_NVML_GPUS", 2);
  if (gpu_count < 1) gpu_count = 1;
  if (gpu_count > MAX_GPUS) gpu_count = MAX_GPUS;
  tau_s = env_uint("MOCK_NVML_TAU_MS", 200) / 1000.0;
  unsigned load = env_uint("MOCK_NVML_LOAD_MW", 650000);
  permission = 1;
  double t = now_s();
  for (unsigned i = 0; i < MAX_GPUS; i++) {
    struct mock_gpu *g = &gpus[i];
    memset(g, 0, sizeof *g);
    g->index = i;
    snprintf(g->uuid, sizeof g->uuid, "GPU-6f1d0c1e-7a2b-4c3d-8e4f-%012u", i);
    snprintf(g->serial, sizeof g->serial, "16501234567%02u", i);
    g->limit_mw = DEFAULT_LIMIT_MW;
    g->load_mw = load;
    g->power_mw = target_mw(g);
    g->avg_mw = g->power_mw;
    g->energy_mj = 1.0e6 * (i + 1); /* counters start non-zero, as after uptime */
    g->last_s = t;
  }
}

__attribute__((constructor)) static void mock_nvml_load(void) { reset_locked(); }

/* Checks init and the handle; on success locks the mutex and advances the GPU. */
static nvmlReturn_t enter(nvmlDevice_t d) {
  pthread_mutex_lock(&mu);
  nvmlReturn_t r = NVML_SUCCESS;
  if (init_count == 0) r = NVML_ERROR_UNINITIALIZED;
  else if (d < gpus || d >= gpus + gpu_count) r = NVML_ERROR_INVALID_ARGUMENT;
  else if (d->lost) r = NVML_ERROR_GPU_IS_LOST;
  if (r != NVML_SUCCESS) {
    pthread_mutex_unlock(&mu);
    return r;
  }
  advance(d);
  return NVML_SUCCESS;
}
#define LEAVE(r) do { pthread_mutex_unlock(&mu); return (r); } while (0)

static nvmlReturn_t copy_str(char *dst, unsigned len, const char *src) {
  if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
  if (strlen(src) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
  memcpy(dst, src, strlen(src) + 1);
  return NVML_SUCCESS;
}

/* ---- NVML API ---- */

EXPORT nvmlReturn_t nvmlInit_v2(void) {
  pthread_mutex_lock(&mu);
  init_count++;
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
  pthread_mutex_lock(&mu);
  if (init_count == 0) LEAVE(NVML_ERROR_UNINITIALIZED);
  init_count--;
  LEAVE(NVML_SUCCESS);
}

EXPORT const char *nvmlErrorString(nvmlReturn_t r) {
  switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_UNKNOWN: return "Unknown Error";
    default: return "Unknown Error";
  }
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
  pthread_mutex_lock(&mu);
  if (init_count == 0) LEAVE(NVML_ERROR_UNINITIALIZED);
  if (!count) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  *count = gpu_count;
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
  pthread_mutex_lock(&mu);
  if (init_count == 0) LEAVE(NVML_ERROR_UNINITIALIZED);
  if (!device || index >= gpu_count) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  if (gpus[index].lost) LEAVE(NVML_ERROR_GPU_IS_LOST);
  *device = &gpus[index];
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
  pthread_mutex_lock(&mu);
  if (init_count == 0) LEAVE(NVML_ERROR_UNINITIALIZED);
  if (!uuid || !device) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  for (unsigned i = 0; i < gpu_count; i++) {
    if (strcmp(gpus[i].uuid, uuid) == 0) {
      if (gpus[i].lost) LEAVE(NVML_ERROR_GPU_IS_LOST);
      *device = &gpus[i];
      LEAVE(NVML_SUCCESS);
    }
  }
  LEAVE(NVML_ERROR_NOT_FOUND);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  LEAVE(copy_str(name, length, "NVIDIA H100 80GB HBM3"));
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  LEAVE(copy_str(uuid, length, d->uuid));
}

EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t d, char *serial, unsigned int length) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  LEAVE(copy_str(serial, length, d->serial));
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *power) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!power) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  /* like Hopper's 1 s averaged reading */
  *power = (unsigned)llround(d->avg_mw);
  LEAVE(NVML_SUCCESS);
}

#ifndef MOCK_NVML_OLD_DRIVER
EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int valuesCount, nvmlFieldValue_t *values) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (valuesCount < 0 || (valuesCount > 0 && !values)) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  long long us = (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
  for (int i = 0; i < valuesCount; i++) {
    nvmlFieldValue_t *v = &values[i];
    v->timestamp = us;
    v->latencyUsec = 0;
    v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
    memset(&v->value, 0, sizeof v->value);
    switch (v->fieldId) {
      case NVML_FI_DEV_POWER_INSTANT:
        v->value.uiVal = (unsigned)llround(d->power_mw);
        v->nvmlReturn = NVML_SUCCESS;
        break;
      case NVML_FI_DEV_POWER_AVERAGE:
        v->value.uiVal = (unsigned)llround(d->avg_mw);
        v->nvmlReturn = NVML_SUCCESS;
        break;
      default:
        v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
    }
  }
  LEAVE(NVML_SUCCESS);
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *limit) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!limit) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  *limit = d->limit_mw; /* no other limiter in the mock */
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t d, unsigned int *limit) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!limit) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  *limit = d->limit_mw;
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t d, unsigned int *limit) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!limit) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  *limit = DEFAULT_LIMIT_MW;
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t d, unsigned int *minLimit,
                                                                 unsigned int *maxLimit) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!minLimit || !maxLimit) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  *minLimit = MIN_LIMIT_MW;
  *maxLimit = MAX_LIMIT_MW;
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t d, unsigned int limit) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!permission) LEAVE(NVML_ERROR_NO_PERMISSION);
  if (limit < MIN_LIMIT_MW || limit > MAX_LIMIT_MW) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  d->limit_mw = limit;
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceSetGpuLockedClocks(nvmlDevice_t d, unsigned int minGpuClockMHz,
                                                 unsigned int maxGpuClockMHz) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!permission) LEAVE(NVML_ERROR_NO_PERMISSION);
  if (minGpuClockMHz > maxGpuClockMHz || maxGpuClockMHz > 1980) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  d->locked_min_mhz = minGpuClockMHz;
  d->locked_max_mhz = maxGpuClockMHz;
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceResetGpuLockedClocks(nvmlDevice_t d) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!permission) LEAVE(NVML_ERROR_NO_PERMISSION);
  d->locked_min_mhz = d->locked_max_mhz = 0;
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *energy) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!energy) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  *energy = (unsigned long long)d->energy_mj;
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, nvmlTemperatureSensors_t sensorType,
                                             unsigned int *temp) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!temp) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  if (sensorType != NVML_TEMPERATURE_GPU) LEAVE(NVML_ERROR_NOT_SUPPORTED);
  *temp = 30u + (unsigned)(d->power_mw / 14000.0); /* ~80 C at 700 W */
  LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *utilization) {
  nvmlReturn_t r = enter(d);
  if (r) return r;
  if (!utilization) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
  utilization->gpu = d->load_mw >= 100000 ? 100u : d->load_mw / 1000u;
  utilization->memory = utilization->gpu / 2u;
  LEAVE(NVML_SUCCESS);
}

/* ---- test controls ---- */

/* 0: set calls fail with NVML_ERROR_NO_PERMISSION (as for a non-root user). */
EXPORT void mock_nvml_set_permission(int allowed) {
  pthread_mutex_lock(&mu);
  permission = allowed != 0;
  pthread_mutex_unlock(&mu);
}

/* The GPU "falls off the bus": every call on it returns NVML_ERROR_GPU_IS_LOST. */
EXPORT void mock_nvml_lose_gpu(unsigned idx) {
  pthread_mutex_lock(&mu);
  if (idx < MAX_GPUS) gpus[idx].lost = 1;
  pthread_mutex_unlock(&mu);
}

/* The power the GPU's workload would draw without a cap. */
EXPORT void mock_nvml_set_load_mw(unsigned idx, unsigned mw) {
  pthread_mutex_lock(&mu);
  if (idx < MAX_GPUS) {
    advance(&gpus[idx]);
    gpus[idx].load_mw = mw;
  }
  pthread_mutex_unlock(&mu);
}

EXPORT void mock_nvml_set_time_constant_ms(unsigned ms) {
  pthread_mutex_lock(&mu);
  for (unsigned i = 0; i < gpu_count; i++) advance(&gpus[i]);
  tau_s = ms / 1000.0;
  pthread_mutex_unlock(&mu);
}

/* Back to the state after load (env re-read); the init count is kept. */
EXPORT void mock_nvml_reset(void) {
  pthread_mutex_lock(&mu);
  reset_locked();
  pthread_mutex_unlock(&mu);
}

EXPORT unsigned mock_nvml_init_count(void) {
  pthread_mutex_lock(&mu);
  unsigned n = init_count;
  pthread_mutex_unlock(&mu);
  return n;
}
