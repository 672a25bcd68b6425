"""``basicsr study analyse``: preference shares with 95% intervals, Bradley-Terry scores, participant checks.

Two intervals per method pair, because they answer different questions:

- Wilson score interval: treats every vote as an independent coin flip. It is what a per-vote
  "share +- interval" such as the paper's Table 1 means, it is exact to compute by hand, and it behaves
  well near 0 % and 100 % and for small counts (unlike the normal approximation).
- Participant-clustered bootstrap (resample participants with replacement, percentile interval):
  votes of one participant are not independent (one person may always prefer the sharper zoom), so
  when participants disagree the Wilson interval is too narrow. With few participants (the paper
  uses 5) the bootstrap is coarse itself. Report both; when they differ, the wider one is the honest one.
"""
import csv
import itertools
import json
import math
import os
import os.path as osp
import random
from collections import defaultdict
from statistics import median

from adflow_plugin.apps.study import StudyError, db
from adflow_plugin.apps.study.create import load_study

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


def wilson_interval(wins, n, z=Z95):
    """Wilson score interval of a binomial proportion ``wins / n``; (nan, nan) when n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def cluster_bootstrap_interval(per_participant, reps=2000, seed=0, level=0.95):
    """Percentile interval of the pooled share, resampling participants.

    Args:
        per_participant (list[tuple[int, int]]): (wins, votes) of each participant.
    """
    clusters = [c for c in per_participant if c[1] > 0]
    if not clusters:
        return math.nan, math.nan
    rng = random.Random(seed)
    shares = []
    for _ in range(reps):
        sample = [clusters[rng.randrange(len(clusters))] for _ in clusters]
        shares.append(sum(w for w, _ in sample) / sum(n for _, n in sample))
    shares.sort()
    lo = shares[int(math.floor((1 - level) / 2 * (reps - 1)))]
    hi = shares[int(math.ceil((1 + level) / 2 * (reps - 1)))]
    return lo, hi


def bradley_terry(methods, wins, iters=10000, tol=1e-12):
    """Bradley-Terry strengths by Hunter's (2004) MM algorithm.

    Args:
        methods (list[str]): method names.
        wins (dict[tuple[str, str], int]): wins[(a, b)] = votes for a over b.
    Returns:
        (dict name -> log-strength with mean 0, pseudo): ``pseudo`` is the pseudo-vote count added to every
        compared pair's both sides (0.5) when some method won no vote (no finite estimate exists then), else 0.
    """
    total_wins = {m: sum(wins.get((m, o), 0) for o in methods if o != m) for m in methods}
    pseudo = 0.5 if any(v == 0 for v in total_wins.values()) else 0.0
    n = {}
    w = defaultdict(float)
    for a in methods:
        for b in methods:
            if a != b:
                n_ab = wins.get((a, b), 0) + wins.get((b, a), 0)
                if n_ab:
                    n[(a, b)] = n_ab + 2 * pseudo
                    w[a] += wins.get((a, b), 0) + pseudo
    p = {m: 1.0 for m in methods}
    for _ in range(iters):
        new = {}
        for a in methods:
            denom = sum(n[(a, b)] / (p[a] + p[b]) for b in methods if (a, b) in n)
            new[a] = w[a] / denom if denom else p[a]
        g = math.exp(sum(math.log(v) for v in new.values()) / len(new))
        new = {m: v / g for m, v in new.items()}
        change = max(abs(math.log(new[m] / p[m])) for m in methods)
        p = new
        if change < tol:
            break
    return {m: math.log(p[m]) for m in methods}, pseudo


def circular_triads(mine):
    """(circular, complete) method triads of one participant's votes, counted per crop.

    A triad is complete when the participant judged all three pairs of three methods on one crop, and
    circular when every method of it won once (A > B > C > A): an answer that no ranking explains.
    Answering at random makes 1 in 4 complete triads circular.
    """
    winner = defaultdict(dict)
    for v in mine:
        winner[v['crop']][frozenset((v['left_method'], v['right_method']))] = v['chosen_method']
    circular = complete = 0
    for judged in winner.values():
        methods = sorted(set().union(*judged))
        for triad in itertools.combinations(methods, 3):
            wins = [judged.get(frozenset(p)) for p in itertools.combinations(triad, 2)]
            if None not in wins:
                complete += 1
                circular += len(set(wins)) == 3
    return circular, complete


def participant_consistency(votes, order=()):
    """Per participant (in ``order``, then any others by token): votes, share answered "left", agreement
    with the other participants' majority on the same crop and pair (ties and trials no one else judged
    left out), circular triads (``circular_triads``), median response time."""
    by_item = defaultdict(list)
    for v in votes:
        by_item[(v['crop'], v['pair'])].append(v)
    rows = {}
    seen = {v['participant'] for v in votes}
    for pid in [p for p in order if p in seen] + sorted(seen - set(order)):
        mine = [v for v in votes if v['participant'] == pid]
        agree = judged = 0
        for v in mine:
            others = [o['chosen_method'] for o in by_item[(v['crop'], v['pair'])] if o['participant'] != pid]
            same = sum(o == v['chosen_method'] for o in others)
            if others and 2 * same != len(others):
                judged += 1
                agree += 2 * same > len(others)
        circular, complete = circular_triads(mine)
        rows[pid] = dict(votes=len(mine), left_share=sum(v['answer'] == 'left' for v in mine) / len(mine),
                         circular_triads=circular, complete_triads=complete,
                         majority_agreement=agree / judged if judged else math.nan, compared=judged,
                         median_response_ms=median(v['response_ms'] for v in mine))
    return rows


def summarise(plan, votes, reference=None, reps=2000, seed=0):
    methods = [m['name'] for m in plan['methods']]
    reference = reference or methods[0]
    if reference not in methods:
        raise StudyError(f'--reference {reference} is not a method of this study ({", ".join(methods)})')
    wins = defaultdict(int)
    per_part = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for v in votes:
        a, b = plan['pairs'][v['pair']]
        wins[(v['chosen_method'], b if v['chosen_method'] == a else a)] += 1
        cell = per_part[(a, b)][v['participant']]
        cell[0] += v['chosen_method'] == a
        cell[1] += 1
    pairs = []
    for plan_a, plan_b in plan['pairs']:
        swap = reference == plan_b  # state every pair with the reference from the reference's side
        a, b = (plan_b, plan_a) if swap else (plan_a, plan_b)
        k, n = wins[(a, b)], wins[(a, b)] + wins[(b, a)]
        clusters = [(c[1] - c[0] if swap else c[0], c[1]) for c in per_part[(plan_a, plan_b)].values()]
        pairs.append(dict(a=a, b=b, votes=n, wins_a=k, share_a=k / n if n else math.nan,
                          wilson=wilson_interval(k, n), bootstrap=cluster_bootstrap_interval(clusters, reps, seed),
                          participants=len(clusters)))
    bt, pseudo = bradley_terry(methods, wins)
    return dict(reference=reference, methods=methods, pairs=pairs, bradley_terry=bt, bt_pseudo_votes=pseudo,
                participants=participant_consistency(votes, list(plan['participants'])), votes=len(votes))


def _pct(x):
    return '-' if math.isnan(x) else f'{100 * x:.1f}'


def to_markdown(summary, plan):
    ref = summary['reference']
    lines = [f'# User study: {len(plan["images"])} images, {plan["crops_per_image"]} crops each '
             f'({plan["crop_size"]} px at x{plan["scale"]}), {summary["votes"]} votes', '',
             f'## {ref} against each method (Table 1 style: share of votes for {ref}, 95% intervals)', '',
             f'| method | votes | {ref} preferred (%) | Wilson 95% CI | participant bootstrap 95% CI | participants |',
             '| --- | ---: | ---: | --- | --- | ---: |']
    for p in summary['pairs']:
        if p['a'] == ref:
            lines.append(f'| {p["b"]} | {p["votes"]} | {_pct(p["share_a"])} | {_pct(p["wilson"][0])}-'
                         f'{_pct(p["wilson"][1])} | {_pct(p["bootstrap"][0])}-{_pct(p["bootstrap"][1])} | '
                         f'{p["participants"]} |')
    lines += ['', '## Every pair', '',
              '| A | B | votes | A preferred (%) | Wilson 95% CI | participant bootstrap 95% CI |',
              '| --- | --- | ---: | ---: | --- | --- |']
    for p in summary['pairs']:
        lines.append(f'| {p["a"]} | {p["b"]} | {p["votes"]} | {_pct(p["share_a"])} | {_pct(p["wilson"][0])}-'
                     f'{_pct(p["wilson"][1])} | {_pct(p["bootstrap"][0])}-{_pct(p["bootstrap"][1])} |')
    note = (f' ({summary["bt_pseudo_votes"]:g} pseudo-votes per side of every pair: a method won no vote)'
            if summary['bt_pseudo_votes'] else '')
    lines += ['', f'## Bradley-Terry scores (log-strength, mean 0){note}', '',
              '| method | score | P(beats a method of score 0) |', '| --- | ---: | ---: |']
    for m, s in sorted(summary['bradley_terry'].items(), key=lambda kv: -kv[1]):
        lines.append(f'| {m} | {s:+.3f} | {100 / (1 + math.exp(-s)):.1f} % |')
    lines += ['', '## Participants', '', '| participant | votes | answered "left" (%) | agrees with the others\' '
              'majority (%) | circular triads | median response (s) |', '| --- | ---: | ---: | ---: | ---: | ---: |']
    for i, (pid, r) in enumerate(summary['participants'].items()):
        lines.append(f'| P{i + 1} ({pid[:4]}...) | {r["votes"]} | {_pct(r["left_share"])} | '
                     f'{_pct(r["majority_agreement"])} | {r["circular_triads"]} of {r["complete_triads"]} | '
                     f'{r["median_response_ms"] / 1000:.1f} |')
    return '\n'.join(lines) + '\n'


def plot(summary, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    pairs = summary['pairs']
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 0.6 * max(len(pairs), len(summary['methods'])) + 2.2),
                                 gridspec_kw=dict(width_ratios=[3, 2]))
    ys = list(range(len(pairs)))[::-1]
    for y, p in zip(ys, pairs):
        share = 100 * p['share_a']
        for (lo, hi), dy, colour, label in ((p['wilson'], 0.12, 'C0', 'Wilson 95%'),
                                            (p['bootstrap'], -0.12, 'C1', 'participant bootstrap 95%')):
            ax.errorbar(share, y + dy, xerr=[[share - 100 * lo], [100 * hi - share]], fmt='o', color=colour,
                        capsize=3, label=label if y == ys[0] else None)
    ax.axvline(50, color='grey', lw=0.8, ls='--')
    ax.set_yticks(ys, [f'{p["a"]} vs {p["b"]}' for p in pairs])
    ax.set_xlim(0, 100)
    ax.set_xlabel('votes for the first method (%)')
    ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8, frameon=False)
    bt = sorted(summary['bradley_terry'].items(), key=lambda kv: kv[1])
    bx.barh([m for m, _ in bt], [s for _, s in bt], color='C2')
    bx.axvline(0, color='grey', lw=0.8)
    bx.set_xlabel('Bradley-Terry score (log-strength)')
    fig.suptitle(f'Which image zoom looks more realistic? ({summary["votes"]} votes)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def analyse(study_dir, out_dir=None, reference=None, reps=2000, seed=0):
    """Write summary.md, summary.json, preferences.png and votes.csv; return (summary, markdown, files)."""
    plan = load_study(study_dir)
    votes = db.read_votes(study_dir)
    if not votes:
        raise StudyError(f'{study_dir} has no votes yet (start it with "basicsr study serve {study_dir}")')
    summary = summarise(plan, votes, reference=reference, reps=reps, seed=seed)
    out_dir = out_dir or osp.join(study_dir, 'analysis')
    os.makedirs(out_dir, exist_ok=True)
    files = [osp.join(out_dir, n) for n in ('summary.md', 'summary.json', 'preferences.png', 'votes.csv')]
    markdown = to_markdown(summary, plan)
    with open(files[0], 'w') as f:
        f.write(markdown)
    with open(files[1], 'w') as f:
        json.dump(summary, f, indent=1)
    plot(summary, files[2])
    with open(files[3], 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=db.COLUMNS)
        writer.writeheader()
        writer.writerows(votes)
    return summary, markdown, files
