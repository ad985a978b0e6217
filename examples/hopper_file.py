"""A D4RL-layout Hopper-v5 file for the README tour, standing in for hopper-medium.hdf5 (no downloads here).

    python examples/hopper_file.py hopper-medium.hdf5 [ROWS]

A slow sine torque with Gaussian noise: the hopper falls within a few dozen steps, so the episodes are short.
"""
import gymnasium as gym, h5py, numpy as np, sys
env = gym.make("Hopper-v5"); rng = np.random.default_rng(0)
obs_l, act_l, rew_l, term_l, to_l, nxt_l = [], [], [], [], [], []
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
episode = 0
while len(rew_l) < rows:
    o, _ = env.reset(seed=episode); done = False
    while not done:
        a = np.clip(0.3 * np.sin(len(rew_l) / 10.0) + rng.normal(0, 0.3, 3), -1, 1).astype(np.float32)
        n, r, te, tr, _ = env.step(a)
        obs_l.append(o); act_l.append(a); rew_l.append(r); nxt_l.append(n); term_l.append(te); to_l.append(tr)
        o = n; done = te or tr
    episode += 1
with h5py.File(sys.argv[1], "w") as f:
    f["observations"] = np.asarray(obs_l, np.float32); f["actions"] = np.asarray(act_l, np.float32)
    f["rewards"] = np.asarray(rew_l, np.float32); f["next_observations"] = np.asarray(nxt_l, np.float32)
    f["terminals"] = np.asarray(term_l); f["timeouts"] = np.asarray(to_l)
print(len(rew_l), "rows,", episode, "episodes")
