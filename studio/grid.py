"""Drawing an X/Y/Z plot's grid: cells in rows and columns, X labels above, Y labels on the left,
and one sub-grid per Z value side by side with its title above, as A1111 lays them out."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = "white"
INK = "black"
MISSING = (128, 128, 128)  # a cell that was not made (the plot was stopped before it)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _wrapped(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """`text` in lines no wider than `width` (words kept whole; a word too long stands alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _label_block(text: str, width: int, font_size: int) -> Image.Image:
    """A label's text, centred, wrapped to `width`."""
    font = _font(font_size)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrapped(scratch, text, font, width)
    line_height = int(font_size * 1.25)
    block = Image.new("RGB", (width, line_height * len(lines) + font_size // 2), BACKGROUND)
    draw = ImageDraw.Draw(block)
    for i, line in enumerate(lines):
        draw.text((width / 2, font_size // 4 + i * line_height), line, fill=INK, font=font, anchor="ma")
    return block


def draw_grid(cells: list[list[Image.Image | None]], x_labels: list[str], y_labels: list[str],
              legend: bool = True, margin: int = 0) -> Image.Image:
    """`cells[row][column]` (all one size; None: not made) in a grid with `margin` pixels between
    cells, labelled with the X values above and the Y values on the left when `legend`."""
    made = [cell for row in cells for cell in row if cell is not None]
    width, height = made[0].size if made else (64, 64)
    rows, columns = len(cells), max(len(row) for row in cells)
    font_size = max(12, min(width, height) // 12)
    tops = [_label_block(label, width, font_size) for label in x_labels] if legend and any(x_labels) else []
    top = max((block.height for block in tops), default=0)
    left = min(max(width, font_size * 8), width * 2) if legend and any(y_labels) else 0
    sides = [_label_block(label, left, font_size) for label in y_labels] if left else []
    grid = Image.new("RGB", (left + columns * width + (columns - 1) * margin,
                             top + rows * height + (rows - 1) * margin), BACKGROUND)
    for c, block in enumerate(tops):
        grid.paste(block, (left + c * (width + margin), top - block.height))
    for r, row in enumerate(cells):
        y = top + r * (height + margin)
        if sides:
            grid.paste(sides[r], (0, y + (height - sides[r].height) // 2))
        for c, cell in enumerate(row):
            x = left + c * (width + margin)
            grid.paste(cell.convert("RGB") if cell is not None else Image.new("RGB", (width, height), MISSING), (x, y))
    return grid


def join_subgrids(grids: list[Image.Image], titles: list[str], legend: bool = True, margin: int = 0) -> Image.Image:
    """Z's sub-grids side by side, each titled with its Z value when `legend`."""
    if len(grids) == 1:
        return grids[0]
    font_size = max(12, min(grids[0].size) // 24)
    blocks = [_label_block(title, grid.width, font_size) for grid, title in zip(grids, titles)] if legend else []
    top = max((block.height for block in blocks), default=0)
    gap = max(margin, font_size)
    joined = Image.new("RGB", (sum(grid.width for grid in grids) + gap * (len(grids) - 1),
                               top + max(grid.height for grid in grids)), BACKGROUND)
    x = 0
    for i, grid in enumerate(grids):
        if blocks:
            joined.paste(blocks[i], (x, 0))
        joined.paste(grid, (x, top))
        x += grid.width + gap
    return joined
