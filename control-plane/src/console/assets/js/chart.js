// Operations over time: uPlot (served from node_modules by the console plugin), plus the same
// numbers as a table for screen readers.

import uPlot from '/ui/vendor/uplot.js';
import { h, table } from './dom.js';

const STEPS_S = [60, 300, 900, 3600, 6 * 3600, 86400];
const MAX_BUCKETS = 48;
const MIN_BUCKETS = 12;

const SERIES = [
  { key: 'succeeded', label: 'Succeeded', stroke: '#1b7f3b' },
  { key: 'failed', label: 'Failed', stroke: '#b3261e' },
  { key: 'open', label: 'Queued or running', stroke: '#1f5fbf' },
];

const seriesOf = (status) =>
  status === 'succeeded' ? 'succeeded' : status === 'queued' || status === 'running' ? 'open' : 'failed';

/** Counts operations per time bucket (by when they were created), for each of SERIES. */
export function bucketize(operations, now = Date.now()) {
  if (operations.length === 0) return { step: 3600, xs: [], counts: SERIES.map(() => []) };
  const times = operations.map((o) => Math.floor(Date.parse(o.createdAt) / 1000));
  const first = Math.min(...times);
  const last = Math.max(Math.floor(now / 1000), ...times);
  const step = STEPS_S.find((s) => (last - first) / s <= MAX_BUCKETS) ?? 86400;
  // At least MIN_BUCKETS, ending now, so a young fleet still gets an axis to read.
  const start = Math.min(Math.floor(first / step), Math.floor(last / step) - (MIN_BUCKETS - 1)) * step;
  const n = Math.floor((last - start) / step) + 1;
  const xs = Array.from({ length: n }, (_, i) => start + i * step);
  const counts = SERIES.map(() => new Array(n).fill(0));
  operations.forEach((o, i) => {
    const b = Math.floor((times[i] - start) / step);
    counts[SERIES.findIndex((s) => s.key === seriesOf(o.status))][b]++;
  });
  return { step, xs, counts };
}

/** Draws the chart into `container` (already in the page, so its width is known). */
export function drawOperationsChart(container, operations) {
  const { step, xs, counts } = bucketize(operations);
  const label = `Operations created per ${step >= 86400 ? 'day' : step >= 3600 ? `${step / 3600} h` : `${step / 60} min`}`;
  const figure = h('figure', { class: 'chart' }, h('figcaption', {}, label));
  container.replaceChildren(figure);
  if (xs.length === 0) {
    figure.append(h('p', { class: 'muted' }, 'No operations yet.'));
    return;
  }
  const plot = h('div', {
    class: 'chart-plot',
    role: 'img',
    'aria-label': `${label}, as in the table below`,
  });
  figure.append(plot);
  new uPlot(
    {
      width: Math.max(320, Math.min(900, container.clientWidth || 640)),
      height: 220,
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
      axes: [{}, { label: 'operations', incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }],
      series: [
        {},
        ...SERIES.map((s) => ({ label: s.label, stroke: s.stroke, width: 2, points: { show: true } })),
      ],
    },
    [xs, ...counts],
    plot,
  );
  figure.append(
    h(
      'details',
      {},
      h('summary', {}, 'The numbers'),
      table(
        label,
        ['From', ...SERIES.map((s) => s.label)],
        xs
          .map((x, i) => [new Date(x * 1000).toLocaleString(), ...counts.map((c) => String(c[i]))])
          .filter((row) => row.slice(1).some((c) => c !== '0')),
      ),
    ),
  );
}
