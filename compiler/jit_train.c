/* `cnnc grad` and `cnnc train` through the JIT: what run.c's generated
 * drivers do, in-process, so training needs no C compiler.
 *
 * The training program's state (jit.c's JitState) holds the parameters,
 * gradients, moments and the training scalars; the forward program, used
 * for test accuracy, borrows its parameters. The few things the C backend
 * prints as plain C rather than loop IR — NAME_init's seeded fill, the
 * learning-rate schedules of NAME_end_epoch, the scalars of NAME_set_lr —
 * are done here the same way, so that a model trains the same through
 * either path (tests/unit/test_jit_train.c compares them). */
#include "jit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnc_runtime.h"

#if CNNC_LLVM

/* --- cnnc grad ---------------------------------------------------------- */

/* An input of the training program from the file: float32 images or
 * targets, or the labels as int64 (int32 widened); the C driver's checks.
 * Returns the data (owned by in, or *wide), or NULL after reporting. */
static const void *take(Diag *d, const char *file, rt_tensors *in,
                        const Buffer *b, int64_t *count, int64_t **wide) {
  const char *name = b->node->name;
  const rt_tensor *t = rt_tensors_find(in, name);
  Loc none = {0, 0, 0};
  if (!t) {
    diag_error(d, none, "%s: no tensor '%s' (an input of the model)", file,
               name);
    return NULL;
  }
  int ok = t->ndim == b->shape.rank + 1 && t->shape[0] >= 1 &&
           (b->is_int ? t->dtype == RT_I64 || t->dtype == RT_I32
                      : t->dtype == RT_F32);
  for (int i = 0; ok && i < b->shape.rank; i++)
    ok = t->shape[i + 1] == b->shape.d[i];
  if (!ok || (*count >= 0 && t->shape[0] != *count)) {
    diag_error(d, none,
               "%s: tensor '%s' must be %s [N%s] with the same N as the other "
               "inputs",
               file, name, b->is_int ? "I64" : "F32",
               b->shape.rank ? ", ..." : "");
    return NULL;
  }
  *count = t->shape[0];
  if (!b->is_int || t->dtype == RT_I64)
    return t->data;
  int64_t n = rt_tensor_numel(t);
  *wide = mem_alloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++)
    (*wide)[i] = ((const int32_t *)t->data)[i];
  return *wide;
}

int jit_grad(Diag *d, const Program *t, const RunOptions *o) {
  Loc none = {0, 0, 0};
  char err[512];
  unsigned char *buf = NULL;
  size_t len = 0;
  int status = 1;
  rt_tensors in = {0}, out = {0};
  const void **ins = mem_alloc(sizeof(void *) * (size_t)(t->inputs.n + 1));
  int64_t **wide = mem_alloc(sizeof(int64_t *) * (size_t)(t->inputs.n + 1));
  Jit *j = NULL;

  /* the files first: a wrong file costs no compile time */
  if (rt_read_file(o->weights, &buf, &len, err, sizeof err)) {
    diag_error(d, none, "%s", err);
    goto done;
  }
  if (rt_safetensors_read(o->input, &in, err, sizeof err)) {
    diag_error(d, none, "%s", err);
    goto done;
  }
  int64_t count = -1;
  for (int i = 0; i < t->inputs.n; i++)
    if (!(ins[i] = take(d, o->input, &in, t->inputs.v[i], &count, &wide[i])))
      goto done;
  if (in.n != t->inputs.n) {
    diag_error(d, none,
               "%s: the file holds tensors that are not inputs of the model",
               o->input);
    goto done;
  }
  if (count > t->batch) {
    diag_error(d, none,
               "%s: %lld samples, but the model's batch is %lld (use --batch)",
               o->input, (long long)count, (long long)t->batch);
    goto done;
  }
  if (!(j = jit_compile(d, t, 2)))
    goto done;
  if (jit_load(j, buf, len, err, sizeof err)) {
    diag_error(d, none, "%s: %s", o->weights, err);
    goto done;
  }
  JitState *s = jit_state(j);
  if (jit_call(j, count, ins, NULL)) {
    diag_error(d, none, "%s: a label is not a class of the model", o->input);
    goto done;
  }
  if (rt_tensors_add(&out, "loss", RT_F32, 0, NULL, s->arena + t->loss->offset))
    goto oom;
  for (int i = 0; i < t->bufs.n; i++) {
    const Buffer *b = t->bufs.v[i];
    if (b->kind != BUF_GRAD)
      continue;
    const Param *prm = b->param_buf->param;
    if (rt_tensors_add(&out, prm->name, RT_F32, prm->shape.rank, prm->shape.d,
                       s->g32 + b->param_buf->offset))
      goto oom;
  }
  if (rt_safetensors_write(o->output, &out, err, sizeof err)) {
    diag_error(d, none, "%s", err);
    goto done;
  }
  status = 0;
  goto done;
oom:
  diag_error(d, none, "out of memory");
done:
  for (int i = 0; i < t->inputs.n; i++)
    mem_free(wide[i]);
  mem_free(wide);
  mem_free(ins);
  free(buf);
  rt_tensors_free(&in);
  rt_tensors_free(&out);
  jit_free(j);
  return status;
}

/* --- cnnc train --------------------------------------------------------- */

/* The state rt_train_main trains: both compiled programs and the scalars
 * emit_c's state struct has beyond JitState's. */
typedef struct Trainer {
  const Program *p, *t;
  Jit *forward, *step;
  JitState *s;       /* the training program's */
  float *m_spare;    /* "__optimizer.m" for a plain SGD, which has no moments */
  int image, labels; /* t's inputs */
  float base_lr, best;
  int64_t bad_epochs;
} Trainer;

/* splitmix64, as NAME_init's NAME_random. */
static uint64_t random64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* NAME_init: the same draws in the same order. */
static void t_init(void *state, uint64_t seed) {
  Trainer *tr = state;
  JitState *s = tr->s;
  size_t n = (size_t)tr->p->f32_count;
  float *areas[] = {s->g32, s->m32, s->v32, tr->m_spare};
  for (int i = 0; i < 4; i++)
    if (areas[i])
      memset(areas[i], 0, sizeof(float) * n);
  s->lr = (float)tr->p->g->train.lr;
  tr->base_lr = s->lr;
  tr->best = INFINITY;
  tr->bad_epochs = 0;
  s->step = 0;
  s->seed = seed;
  s->draws = 0;
  memset(s->i64, 0, sizeof(int64_t) * (size_t)tr->p->i64_count);
  uint64_t r = seed;
  for (int i = 0; i < tr->p->inits.n; i++) {
    const ParamInit *pi = &tr->p->inits.v[i];
    if (pi->buf->kind != BUF_F32)
      continue;
    float bound = pi->fill == FILL_UNIFORM ? (float)pi->bound : 0.0f;
    float value = pi->fill == FILL_CONST ? (float)pi->value : 0.0f;
    float *dst = s->f32 + pi->buf->offset;
    for (int64_t k = 0; k < pi->buf->size; k++) {
      float u = (float)(random64(&r) >> 40) * (1.0f / 16777216.0f);
      dst[k] = bound != 0.0f ? (2.0f * u - 1.0f) * bound : value;
    }
  }
}

static int t_forward(void *state, int count, const float *x, float *logits) {
  Trainer *tr = state;
  const void *ins[1] = {x};
  void *outs[1] = {logits};
  return jit_call(tr->forward, count, ins, outs);
}

static float t_step(void *state, int count, const float *x, const int64_t *y) {
  Trainer *tr = state;
  const void *ins[2];
  ins[tr->image] = x;
  ins[tr->labels] = y;
  if (jit_call(tr->step, count, ins, NULL))
    return NAN;
  jit_update(tr->step);
  return tr->s->arena[tr->t->loss->offset];
}

static void t_set_lr(void *state, float lr) {
  Trainer *tr = state;
  tr->s->lr = lr;
  tr->base_lr = lr;
}

/* NAME_end_epoch: the schedule of the train section. */
static float t_end_epoch(void *state, int epoch, int epochs, float val_error) {
  Trainer *tr = state;
  const TrainCfg *tc = &tr->p->g->train;
  float *lr = &tr->s->lr;
  switch (tc->sched) {
  case SCHED_STEP:
    *lr = tr->base_lr *
          powf((float)tc->gamma, (float)((epoch + 1) / (int)tc->every));
    break;
  case SCHED_COSINE:
    *lr = tr->base_lr * 0.5f *
          (1.0f + cosf(3.14159265f * (float)(epoch + 1) /
                       (float)(epochs > 0 ? epochs : 1)));
    break;
  case SCHED_PLATEAU:
    if (val_error < tr->best * (1.0f - 1e-4f)) {
      tr->best = val_error;
      tr->bad_epochs = 0;
    } else if (++tr->bad_epochs > tc->patience) {
      *lr *= (float)tc->factor;
      tr->bad_epochs = 0;
    }
    break;
  case SCHED_CONSTANT: break;
  }
  return *lr;
}

static float *t_f32(void *state) { return ((Trainer *)state)->s->f32; }
static int64_t *t_i64(void *state) { return ((Trainer *)state)->s->i64; }
static float *t_m32(void *state) {
  Trainer *tr = state;
  return tr->s->m32 ? tr->s->m32 : tr->m_spare;
}
static float *t_v32(void *state) { return ((Trainer *)state)->s->v32; }
static float *t_lr(void *state) { return &((Trainer *)state)->s->lr; }
static int64_t *t_step_of(void *state) { return &((Trainer *)state)->s->step; }

/* Every parameter of p at the same offset in t: what sharing needs. */
static int same_layout(const Program *p, const Program *t) {
  if (p->f32_count != t->f32_count || p->i64_count != t->i64_count ||
      !p->packed_ok != !t->packed_ok ||
      (p->packed_ok && p->packed_ok->offset != t->packed_ok->offset))
    return 0; /* (the update clears the forward pass's packed_ok) */
  int n = p->g->params.n;
  const Buffer **in_t = mem_alloc(sizeof *in_t * ((size_t)n + 1));
  memset(in_t, 0, sizeof *in_t * ((size_t)n + 1));
  for (int k = 0; k < t->bufs.n; k++) {
    const Buffer *b = t->bufs.v[k];
    if (b->param && b->param->index >= 0 && b->param->index < n)
      in_t[b->param->index] = b;
  }
  int same = 1;
  for (int i = 0; i < p->bufs.n && same; i++) {
    const Buffer *a = p->bufs.v[i];
    if (!a->param)
      continue;
    const Buffer *b = a->param->index >= 0 ? in_t[a->param->index] : NULL;
    same = b && b->kind == a->kind && b->offset == a->offset;
  }
  mem_free(in_t);
  return same;
}

int jit_train(Diag *d, const Program *p, const Program *t,
              const RunOptions *o) {
  if (!same_layout(p, t)) {
    diag_internal(d, "the forward and training programs place the "
                     "parameters differently");
    return 1;
  }
  Trainer tr = {p, t, NULL, NULL, NULL, NULL, 0, 1, 0, 0, 0};
  int status = 1;
  rt_param *params = mem_alloc(sizeof(rt_param) * (size_t)(p->bufs.n + 1));
  if (!(tr.step = jit_compile(d, t, 2)) || !(tr.forward = jit_compile(d, p, 2)))
    goto done;
  jit_share_params(tr.forward, tr.step);
  tr.s = jit_state(tr.step);
  if (!tr.s->m32)
    tr.m_spare = mem_alloc_lines(sizeof(float) * (size_t)p->f32_count);
  tr.image = t->inputs.v[0]->is_int;
  tr.labels = !tr.image;
  int n = 0;
  for (int i = 0; i < p->bufs.n; i++) {
    const Buffer *b = p->bufs.v[i];
    if (!b->param)
      continue;
    rt_param *r = &params[n++];
    r->name = b->param->name;
    r->is_int = b->is_int;
    r->ndim = b->shape.rank;
    for (int k = 0; k < b->shape.rank && k < 4; k++)
      r->shape[k] = b->shape.d[k];
    r->offset = (size_t)b->offset;
    r->numel = (size_t)b->size;
    r->trainable = b->param->kind == PK_PARAM && !b->param->frozen;
  }
  const Buffer *x = p->inputs.v[0];
  const TrainCfg *tc = &p->g->train;
  rt_model m = {p->g->name,
                (int)p->batch,
                x->shape.d[0],
                x->shape.d[1],
                x->shape.d[2],
                p->outputs.v[0]->shape.d[0],
                sizeof tr,
                (int)tc->epochs,
                (float)tc->lr,
                (uint64_t)tc->seed,
                params,
                n,
                t_init,
                t_forward,
                t_step,
                t_set_lr,
                t_end_epoch,
                t_f32,
                t_i64,
                t_m32,
                t_v32,
                t_lr,
                t_step_of,
                (size_t)p->f32_count,
                &tr};
  /* a command line as main() gets one: writable strings */
  int argc = 1;
  while (o->train_argv[argc])
    argc++;
  char **argv = arena_alloc(d->arena, sizeof(char *) * (size_t)(argc + 1));
  argv[0] = arena_strdup(d->arena, p->g->name);
  for (int i = 1; i < argc; i++)
    argv[i] = arena_strdup(d->arena, o->train_argv[i]);
  argv[argc] = NULL;
  status = rt_train_main(&m, argc, argv);
done:
  mem_free(params);
  mem_free(tr.m_spare);
  jit_free(tr.forward);
  jit_free(tr.step);
  return status;
}

#else /* built without LLVM: jit.c's stubs say so */

int jit_grad(Diag *d, const Program *t, const RunOptions *o) {
  (void)t;
  (void)o;
  return jit_run(d, NULL, NULL);
}

int jit_train(Diag *d, const Program *p, const Program *t,
              const RunOptions *o) {
  (void)p;
  (void)t;
  (void)o;
  return jit_run(d, NULL, NULL);
}

#endif
