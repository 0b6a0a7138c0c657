// llama.cpp's split of one model over several GPUs: the options reach llama_model_params (info()
// reports what the load handed llama.cpp), and bad values are refused by name. No GPU here: on the
// CPU llama.cpp loads with any split and uses none of it.
import { describe, expect, it } from 'vitest';
import { loadEngine } from '../helpers.ts';

describe('splitMode, mainGpu, tensorSplit', () => {
  it("reach llama_model_params as given; unset, llama.cpp's defaults", async () => {
    const plain = await loadEngine('tiny-qa', { slots: 1 });
    const split = await loadEngine('tiny-qa', { slots: 1, splitMode: 'row', mainGpu: 1, tensorSplit: [3, 1] });
    try {
      expect(plain.model).toMatchObject({ splitMode: 'layer', mainGpu: 0, tensorSplit: [] });
      expect(split.model).toMatchObject({ splitMode: 'row', mainGpu: 1 });
      // llama.cpp reads llama_max_devices() shares: those given, then zeros.
      const ts = split.model.tensorSplit;
      expect(ts.length).toBeGreaterThanOrEqual(2);
      expect(ts.slice(0, 2)).toEqual([3, 1]);
      expect(ts.slice(2).every((x) => x === 0)).toBe(true);
      const none = await loadEngine('tiny-qa', { slots: 1, splitMode: 'none' });
      expect(none.model.splitMode).toBe('none');
      await none.close();
    } finally {
      await plain.close();
      await split.close();
    }
  });

  it('bad values are refused by name', async () => {
    await expect(loadEngine('tiny-qa', { splitMode: 'tensor' as 'row' })).rejects.toThrow(
      "splitMode must be 'none', 'layer' or 'row'",
    );
    await expect(loadEngine('tiny-qa', { tensorSplit: [1, -1] })).rejects.toThrow(
      'tensorSplit[1] must be a number >= 0',
    );
    await expect(loadEngine('tiny-qa', { tensorSplit: [0, 0] })).rejects.toThrow(
      'tensorSplit must give some GPU a share',
    );
    await expect(loadEngine('tiny-qa', { tensorSplit: Array(1000).fill(1) })).rejects.toThrow(
      /tensorSplit must have 1 to \d+ entries \(one per GPU\), got 1000/,
    );
    await expect(loadEngine('tiny-qa', { mainGpu: 100000 })).rejects.toThrow(/mainGpu/);
  });
});
