"""``basicsr study {create,serve,analyse}``: the paper's pairwise user study (Table 1) on ``basicsr test`` results."""
import argparse


def register(subparsers):
    p = subparsers.add_parser(
        'study', help='pairwise user study: build it, serve it to participants, analyse the votes',
        description='The paper\'s user study: participants see the LR image with a region boxed and two '
        'anonymised SR zooms of it, and answer "Which image zoom looks more realistic?".')
    sub = p.add_subparsers(dest='study_command', metavar='STEP', parser_class=type(p))
    sub.required = True

    c = sub.add_parser(
        'create', help='build a study folder from basicsr test results',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Builds STUDY: random crops (seeded, recorded) cut from every method\'s SR image, the LR\n'
        'images, every method pair, and for each participant a token and a random, left/right-balanced\n'
        'order of all (crop, pair) trials. Images are matched by the LR file names: a method folder holds\n'
        '<image>.png, <image>_<suffix>.png (ESRGAN) or <image>_t<T>[_s<k>]_<suffix>.png (flow samples).\n\n'
        'example:\n  basicsr study create studies/demo --lr datasets/demo/val/LRbicx4 \\\n'
        '    --method T0.8=results/test_demo_AdFlow_x4/visualization/demo_val:t=0.8 \\\n'
        '    --method T1=results/test_demo_AdFlow_x4/visualization/demo_val:t=1')
    c.add_argument('study', metavar='STUDY', help='study folder to create (must not exist)')
    c.add_argument('--method', action='append', required=True, metavar='NAME=DIR[:t=T][:s=K]',
                   help='a method and its result images (repeat for each method, two or more); for flow '
                   'samples :t=T picks the temperature (needed when there are several) and :s=K the sample '
                   '(default 0). GT can be a method too: GT=datasets/<set>/GT')
    c.add_argument('--lr', required=True, metavar='DIR', help='the LR inputs the methods were run on')
    c.add_argument('--crop-size', type=int, default=128, metavar='PX',
                   help='crop side in SR pixels, a multiple of the scale (default 128)')
    c.add_argument('--crops-per-image', type=int, default=3, metavar='N', help='random crops per image (default 3, '
                   'as the paper)')
    c.add_argument('--participants', type=int, default=5, metavar='N', help='participant tokens (default 5, as '
                   'the paper)')
    c.add_argument('--seed', type=int, help='seed of crops and orders (default: drawn; always recorded)')
    c.add_argument('--images', type=int, metavar='N', help='only the first N LR images (by name)')
    c.set_defaults(func=run_create)

    s = sub.add_parser('serve', help='serve a study to its participants (web page, votes to SQLite)',
                       description='Serves STUDY with waitress; prints one link per participant. Votes go to '
                       'STUDY/votes.sqlite, each committed before it is acknowledged.')
    s.add_argument('study', metavar='STUDY')
    s.add_argument('--host', default='127.0.0.1',
                   help='address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for a lab network)')
    s.add_argument('--port', type=int, default=8765, help='port (default 8765; 0 picks a free one)')
    s.add_argument('--threads', type=int, default=8, help='worker threads (default 8)')
    s.set_defaults(func=run_serve)

    a = sub.add_parser('analyse', help='preference shares with 95%% intervals, Bradley-Terry, participants, CSV',
                       description='Writes OUT/summary.md (Table 1 style), summary.json, preferences.png and '
                       'votes.csv (every vote). Intervals: Wilson (votes independent) and a participant-'
                       'clustered bootstrap (participants resampled).')
    a.add_argument('study', metavar='STUDY')
    a.add_argument('-o', '--out', metavar='DIR', help='output folder (default STUDY/analysis)')
    a.add_argument('--reference', metavar='METHOD', help='the method the Table 1 rows compare against '
                   '(default: the first --method of create)')
    a.add_argument('--bootstrap', type=int, default=2000, metavar='N', help='bootstrap resamples (default 2000)')
    a.add_argument('--seed', type=int, default=0, help='bootstrap seed (default 0)')
    a.set_defaults(func=run_analyse)


def _study_errors(fn):
    def wrapped(args):
        from adflow_plugin.cli import CLIError
        from adflow_plugin.apps.study import StudyError
        try:
            return fn(args)
        except StudyError as e:
            raise CLIError(str(e)) from None
    return wrapped


@_study_errors
def run_create(args):
    from adflow_plugin.apps.study.create import create_study, parse_method
    plan = create_study(args.study, [parse_method(m) for m in args.method], args.lr, crop_size=args.crop_size,
                        crops_per_image=args.crops_per_image, participants=args.participants, seed=args.seed,
                        images=args.images)
    n = len(next(iter(plan['participants'].values())))
    print(f'created {args.study}: {len(plan["images"])} images x {plan["crops_per_image"]} crops '
          f'({plan["crop_size"]} px, x{plan["scale"]}), {len(plan["pairs"])} pairs, {len(plan["participants"])} '
          f'participants x {n} trials, seed {plan["seed"]}')
    print(f'next: basicsr study serve {args.study}')
    return 0


@_study_errors
def run_serve(args):
    import errno

    from adflow_plugin.cli import CLIError
    from adflow_plugin.apps.study.server import serve
    try:
        return serve(args.study, host=args.host, port=args.port, threads=args.threads,
                     announce=lambda line: print(line, flush=True))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise CLIError(f'port {args.port} on {args.host} is in use; choose another with --port') from None
        raise


@_study_errors
def run_analyse(args):
    from adflow_plugin.apps.study.analyse import analyse
    _, markdown, files = analyse(args.study, args.out, reference=args.reference, reps=args.bootstrap,
                                 seed=args.seed)
    print(markdown)
    for f in files:
        print(f'wrote {f}')
    return 0
