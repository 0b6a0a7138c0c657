// The benchmark's report: a Markdown table and SVG charts, from the results JSON.

export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
const esc = (s: string) => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);

/** A line chart (log2 x axis for stream counts when `logX`), one polyline and legend entry per series. */
export function lineChart(title: string, xLabel: string, yLabel: string, series: Series[], logX = true): string {
  const W = 720,
    H = 420,
    L = 70,
    R = 170,
    T = 40,
    B = 50;
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.y));
  const fx = (x: number) => (logX ? Math.log2(x) : x);
  const xs = all.map((p) => fx(p.x));
  const xMin = Math.min(...xs, 0),
    xMax = Math.max(...xs, 1);
  const yMax = Math.max(...all.map((p) => p.y), 1) * 1.1;
  const px = (x: number) => L + ((fx(x) - xMin) / (xMax - xMin || 1)) * (W - L - R);
  const py = (y: number) => H - B - (y / yMax) * (H - T - B);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">${esc(yLabel)}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const y = (yMax / 5) * i;
    out.push(
      `<line x1="${L}" y1="${py(y)}" x2="${W - R}" y2="${py(y)}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${py(y) + 4}" text-anchor="end">${Math.round(y)}</text>`,
    );
  }
  for (const x of [...new Set(all.map((p) => p.x))].sort((a, b) => a - b)) {
    out.push(`<text x="${px(x)}" y="${H - B + 16}" text-anchor="middle">${x}</text>`);
  }
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => Number.isFinite(p.y));
    if (pts.length > 1)
      out.push(
        `<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map((p) => `${px(p.x)},${py(p.y)}`).join(' ')}"/>`,
      );
    for (const p of pts) out.push(`<circle cx="${px(p.x)}" cy="${py(p.y)}" r="3.5" fill="${c}"/>`);
    out.push(
      `<rect x="${W - R + 12}" y="${T + i * 20}" width="12" height="12" fill="${c}"/>`,
      `<text x="${W - R + 30}" y="${T + i * 20 + 10}">${esc(s.name)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}

/** A bar chart of labelled values. */
export function barChart(title: string, yLabel: string, bars: { label: string; value: number }[]): string {
  const W = 720,
    H = 420,
    L = 70,
    R = 20,
    T = 40,
    B = 60;
  const yMax = Math.max(...bars.map((b) => b.value).filter(Number.isFinite), 1) * 1.15;
  const slot = (W - L - R) / Math.max(bars.length, 1);
  const py = (y: number) => H - B - (y / yMax) * (H - T - B);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">${esc(yLabel)}</text>`,
  ];
  bars.forEach((b, i) => {
    const x = L + i * slot + slot * 0.15;
    const v = Number.isFinite(b.value) ? b.value : 0;
    out.push(
      `<rect x="${x}" y="${py(v)}" width="${slot * 0.7}" height="${H - B - py(v)}" fill="${COLORS[i % COLORS.length]}"/>`,
      `<text x="${x + slot * 0.35}" y="${py(v) - 6}" text-anchor="middle">${Math.round(v)}</text>`,
      `<text x="${x + slot * 0.35}" y="${H - B + 18}" text-anchor="middle">${esc(b.label)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}

export function table(headers: string[], rows: (string | number)[][]): string {
  const fmt = (v: string | number) =>
    typeof v === 'number'
      ? !Number.isFinite(v)
        ? '—'
        : Number.isInteger(v) || Math.abs(v) >= 100
          ? Math.round(v).toString()
          : v.toFixed(2)
      : v;
  return [
    `| ${headers.join(' | ')} |`,
    `|${headers.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.map(fmt).join(' | ')} |`),
  ].join('\n');
}
