"""Generates src/Optim.CSharp/Schedulers/{LrSchedulers,MomentumSchedulers,GenericSchedulers}.cs:
one thin class per PARAM_SCHEDULERS name whose public constructor takes MMEngine's arguments
(names, order, defaults) and hands them to the core (Optim.Core.ScheduleConfig) for validation.
Run from the repository root: python3 tools/gen_schedulers.py"""

TAIL = [('long', 'begin', '0'), ('long', 'end', 'INF'), ('long', 'last_step', '-1'),
        ('bool', 'by_epoch', 'true'), ('bool', 'verbose', 'false')]

KINDS = {
    'Step': ([('long', 'step_size', None), ('double', 'gamma', '0.1')] + TAIL,
             'Multiplies the value by <c>gamma</c> every <c>step_size</c> steps.'),
    'MultiStep': ([('IReadOnlyList<long>', 'milestones', None), ('double', 'gamma', '0.1'), ('long', 'last_step', '-1'),
                   ('long', 'begin', '0'), ('long', 'end', 'INF'), ('bool', 'by_epoch', 'true'), ('bool', 'verbose', 'false')],
                  'Multiplies the value by <c>gamma</c> at each milestone (by gamma^k at a milestone listed k times).'),
    'Constant': ([('double', 'factor', '1.0 / 3')] + TAIL,
                 'Multiplies the value by <c>factor</c>, and restores it at step <c>end - begin - 1</c>.'),
    'Exponential': ([('double', 'gamma', None)] + TAIL, 'Multiplies the value by <c>gamma</c> every step.'),
    'CosineAnnealing': ([('long?', 'T_max', 'null'), ('double?', 'eta_min', 'null')] + TAIL + [('double?', 'eta_min_ratio', 'null')],
                        'Cosine annealing from the group\'s value down to <c>eta_min</c> (or base × <c>eta_min_ratio</c>) over <c>T_max</c> steps, as a chainable recurrence.'),
    'Linear': ([('double', 'start_factor', '1.0 / 3'), ('double', 'end_factor', '1.0')] + TAIL,
               'Scales the value linearly from <c>start_factor</c> to <c>end_factor</c> of itself over [begin, end): MMEngine\'s warm-up.'),
    'Poly': ([('double', 'eta_min', '0'), ('double', 'power', '1.0')] + TAIL,
             'Polynomial decay to <c>eta_min</c> with exponent <c>power</c> over [begin, end).'),
    'OneCycle': ([('double', 'eta_max', '0'), ('long?', 'total_steps', 'null'), ('double', 'pct_start', '0.3'),
                  ('string', 'anneal_strategy', '"cos"'), ('double', 'div_factor', '25'), ('double', 'final_div_factor', '1e4'),
                  ('bool', 'three_phase', 'false')] + TAIL,
                 'The 1cycle policy: from eta_max / div_factor up to <c>eta_max</c> over <c>pct_start</c> of <c>total_steps</c>, then down to the minimum (cosine or linear annealing; two or three phases). Not chainable; learning rate only.'),
    'CosineRestart': ([('IReadOnlyList<long>', 'periods', None), ('IReadOnlyList<double>?', 'restart_weights', 'null'),
                       ('double?', 'eta_min', 'null'), ('double?', 'eta_min_ratio', 'null')] + TAIL,
                      'Cosine annealing restarted at the start of every period, from base × restart weight down to <c>eta_min</c> (or base × <c>eta_min_ratio</c>; exactly one is required).'),
    'ReduceOnPlateau': ([('string', 'monitor', '"loss"'), ('string', 'rule', '"less"'), ('double', 'factor', '0.1'),
                         ('long', 'patience', '10'), ('double', 'threshold', '1e-4'), ('string', 'threshold_rule', '"rel"'),
                         ('long', 'cooldown', '0'), ('double', 'min_value', '0'), ('double', 'eps', '1e-8')] + TAIL,
                        'Multiplies the value by <c>factor</c> (not below <c>min_value</c>) when the monitored metric has not improved for more than <c>patience</c> evaluations. Epoch-based only; step it with validation metrics (<see cref="ParamScheduler.step(IReadOnlyDictionary{string, double})"/>).'),
}

# Per-group list overloads (Python accepts a scalar or a list).
LIST_OVERLOADS = {'OneCycle': 'eta_max', 'ReduceOnPlateau': 'min_value'}

DOCS = {
    'optimizer': 'The wrapper (its base pseudo group included) or bare TorchSharp optimizer to schedule.',
    'param_name': 'The group key to schedule (<c>lr</c>, <c>momentum</c>, <c>weight_decay</c>, ...).',
    'step_size': 'Steps between two decays.',
    'gamma': 'Multiplicative factor of each decay.',
    'milestones': 'Steps (counted from <c>begin</c>) at which to decay.',
    'factor': 'The multiplier.',
    'T_max': 'Steps of one half cosine; null (or 0) means <c>end - begin</c>.',
    'eta_min': 'The lowest value (exclusive with <c>eta_min_ratio</c>).',
    'eta_min_ratio': 'The lowest value as a ratio of each group\'s base value (exclusive with <c>eta_min</c>).',
    'start_factor': 'Multiplier at the first step, in [0, 1].',
    'end_factor': 'Multiplier reached at the last step, in [0, 1].',
    'power': 'Exponent of the polynomial.',
    'eta_max': 'The peak value (one per group in the list overload, the pseudo group included).',
    'total_steps': 'Steps of the whole cycle; null means <c>end - begin</c>.',
    'pct_start': 'Fraction of the cycle spent increasing, in [0, 1].',
    'anneal_strategy': '<c>"cos"</c> or <c>"linear"</c>.',
    'div_factor': 'The initial value is <c>eta_max / div_factor</c>.',
    'final_div_factor': 'The final value is <c>initial / final_div_factor</c>.',
    'three_phase': 'Whether to go back to the initial value before annihilating (the paper\'s schedule).',
    'periods': 'Length of each cosine cycle.',
    'restart_weights': 'Weight of the base value at each restart (one per period); null means <c>[1]</c>.',
    'monitor': 'The metric key to watch.',
    'rule': '<c>"less"</c> (lower is better) or <c>"greater"</c>.',
    'patience': 'Evaluations without improvement tolerated before reducing.',
    'threshold': 'Smallest change counted as an improvement.',
    'threshold_rule': '<c>"rel"</c> or <c>"abs"</c>.',
    'cooldown': 'Evaluations to wait after a reduction.',
    'min_value': 'Lower bound (one per real group in the list overload).',
    'eps': 'Reductions smaller than this are skipped.',
    'begin': 'First step (inclusive) at which the value changes.',
    'end': 'Step (exclusive) from which the value no longer changes.',
    'last_step': '-1 for a fresh start; otherwise the step to resume from (the groups must hold <c>initial_{param}</c>).',
    'by_epoch': 'Whether steps are epochs (stepped after each epoch) or iterations.',
    'verbose': 'Log each change.',
}

FAMILIES = [
    ('LR', 'LrSchedulers.cs', 'learning rate (<c>lr</c>)', False),
    ('Momentum', 'MomentumSchedulers.cs',
     'momentum: <c>momentum</c> when the optimizer has it, else <c>betas[0]</c> (Adam-like optimizers; a <c>momentum</c> key mirrors it)', False),
    ('ParamScheduler', 'GenericSchedulers.cs', 'the group key named by <c>param_name</c>', True),
]


def param_list(params, generic, list_param=None):
    out = ['SchedulerTarget optimizer']
    if generic:
        out.append('string param_name')
    for ty, name, default in params:
        if name == list_param:
            ty, default = 'IReadOnlyList<double>', None
        out.append(f'{ty} {name}' + (f' = {default}' if default is not None else ''))
    return out


def order_required_first(params, list_param):
    # C# needs optional parameters last; a list overload's parameter becomes required.
    if list_param is None:
        return params
    req = [p for p in params if p[1] == list_param]
    return req + [p for p in params if p[1] != list_param]


def kwargs(params, generic):
    items = []
    if generic:
        items.append('("param_name", param_name)')
    for ty, name, default in params:
        if name == 'restart_weights':
            items.append(f'("{name}", (object?)restart_weights ?? Omitted)')
        else:
            items.append(f'("{name}", {name})')
    return items


def gen(prefix_or_suffix, fname, what, generic):
    lines = ['// Generated by tools/gen_schedulers.py from MMEngine\'s constructor signatures; edit the generator.',
             'using Optim.Core;', '', 'namespace Optim;', '']
    for kind, (params, summary) in KINDS.items():
        if prefix_or_suffix == 'Momentum' and kind == 'OneCycle':
            continue
        cls = kind + prefix_or_suffix
        lines.append(f'/// <summary>{summary} Schedules {what}. MMEngine\'s <c>{cls}</c>.</summary>')
        lines.append(f'public class {cls} : ParamScheduler')
        lines.append('{')
        overloads = [None] + ([LIST_OVERLOADS[kind]] if kind in LIST_OVERLOADS else [])
        for lp in overloads:
            ps = order_required_first(params, lp)
            lines.append(f'    /// <summary>Creates the scheduler and performs its first step (MMEngine\'s constructor).</summary>')
            names = ['optimizer'] + (['param_name'] if generic else []) + [p[1] for p in ps]
            for n in names:
                lines.append(f'    /// <param name="{n}">{DOCS[n]}</param>')
            lines.append('    /// <exception cref="ParamSchedulerException">An argument MMEngine rejects, with its message.</exception>')
            sig = ', '.join(param_list(ps, generic, lp))
            lines.append(f'    public {cls}({sig})')
            kw = ', '.join(kwargs(ps, generic))
            lines.append(f'        : base(optimizer, Configure("{cls}", {kw})) {{ }}')
            lines.append('')
        lines.append('    internal ' + cls + '(SchedulerTarget optimizer, Schedules.Scheduler settings) : base(optimizer, settings) { }')
        lines.append('}')
        lines.append('')
    open(f'src/Optim.CSharp/Schedulers/{fname}', 'w').write('\n'.join(lines))


# The registry table: every generated class by name.
def gen_table():
    lines = ['// Generated by tools/gen_schedulers.py; edit the generator.', 'using Optim.Core;', '', 'namespace Optim;', '',
             'public static partial class ParamSchedulers', '{',
             '    private static IEnumerable<(string Name, Func<SchedulerTarget, Schedules.Scheduler, ParamScheduler> Create)> BuiltIns()', '    {']
    for prefix_or_suffix, _, _, _ in FAMILIES:
        for kind in KINDS:
            if prefix_or_suffix == 'Momentum' and kind == 'OneCycle':
                continue
            cls = kind + prefix_or_suffix
            lines.append(f'        yield return ("{cls}", (t, s) => new {cls}(t, s));')
    lines += ['    }', '}', '']
    open('src/Optim.CSharp/Schedulers/BuiltInSchedulers.cs', 'w').write('\n'.join(lines))


for f in FAMILIES:
    gen(*f)
gen_table()
